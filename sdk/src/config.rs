//! Typed plugin configuration.

use serde::de::DeserializeOwned;

use crate::error::ConfigError;

/// A plugin's configuration: the JSON the proxy delivers (Envoy's `configuration` as a
/// `google.protobuf.StringValue`, Istio's `pluginConfig`, Higress's console config),
/// deserialized with serde.
///
/// An empty configuration means `Default::default()`, as in the Higress Go SDK. After parsing,
/// [`validate`](PluginConfig::validate) runs; any error rejects the configuration with a log
/// line naming the field.
///
/// ```
/// use proxy_async::{ConfigError, PluginConfig};
///
/// #[derive(serde::Deserialize, Default)]
/// #[serde(rename_all = "camelCase")]
/// struct Config {
///     request_path: String,
/// }
///
/// impl PluginConfig for Config {
///     fn validate(&self) -> Result<(), ConfigError> {
///         if self.request_path.is_empty() {
///             return Err(ConfigError::field("requestPath", "must not be empty"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait PluginConfig: DeserializeOwned + Default + 'static {
    /// Checks what serde cannot; the default accepts everything.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// The configuration of a plugin that takes none. It accepts an empty configuration and any
/// JSON object (Istio and Higress may deliver `{}` or add their own keys).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct NoConfig {}

impl PluginConfig for NoConfig {}

/// Parses the configuration bytes the proxy delivered.
pub(crate) fn parse<C: PluginConfig>(bytes: &[u8]) -> Result<C, ConfigError> {
    let json = bytes.trim_ascii();
    let config = if json.is_empty() {
        C::default()
    } else {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let config: C = serde_path_to_error::deserialize(&mut deserializer).map_err(describe)?;
        deserializer
            .end()
            .map_err(|error| ConfigError::new(format!("{error} (text after the JSON value)")))?;
        config
    };
    config.validate()?;
    Ok(config)
}

fn describe(error: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let path = error.path().to_string();
    let inner = error.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        return ConfigError::new(format!(
            "not valid JSON: {inner} (deliver the configuration as JSON, e.g. in a google.protobuf.StringValue)"
        ));
    }
    // serde names missing and unknown fields itself; `.` is the top-level object.
    if path == "." {
        ConfigError::new(inner)
    } else {
        ConfigError::field(path, inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Sample {
        service_port: u16,
        #[serde(default)]
        upstreams: Vec<Upstream>,
    }

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Upstream {
        #[allow(dead_code, reason = "only parsed")]
        timeout_ms: u32,
    }

    impl PluginConfig for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.service_port == 0 {
                return Err(ConfigError::field("servicePort", "must not be 0"));
            }
            Ok(())
        }
    }

    fn error(json: &str) -> String {
        parse::<Sample>(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn parses_json() {
        let config: Sample = parse(br#" {"servicePort": 8080} "#).unwrap();
        assert_eq!(config.service_port, 8080);
    }

    #[test]
    fn empty_configuration_is_the_default_and_still_validated() {
        assert_eq!(
            error("  "),
            "invalid plugin configuration: field `servicePort`: must not be 0"
        );
        assert_eq!(parse::<NoConfig>(b"").unwrap(), NoConfig {});
        assert_eq!(parse::<NoConfig>(b"{}").unwrap(), NoConfig {});
        assert_eq!(
            parse::<NoConfig>(br#"{"_plugin_id_": "x"}"#).unwrap(),
            NoConfig {}
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            error(r#"{"servicePort": "http"}"#),
            "invalid plugin configuration: field `servicePort`: invalid type: string \"http\", expected u16 at line 1 column 22"
        );
        assert_eq!(
            error(r#"{"servicePort": 80, "upstreams": [{"timeout_ms": -1}]}"#),
            "invalid plugin configuration: field `upstreams[0].timeout_ms`: invalid value: integer `-1`, expected u32 at line 1 column 51"
        );
        assert_eq!(
            error(r#"{}"#),
            "invalid plugin configuration: missing field `servicePort` at line 1 column 2"
        );
        assert!(error(r#"{"servicePort": 1, "port": 2}"#).contains("unknown field `port`"));
    }

    mod random {
        use proptest::prelude::*;
        use proptest::test_runner::Config;

        use super::*;

        proptest! {
            #![proptest_config(Config {
                cases: if cfg!(miri) { 4 } else { 3000 },
                failure_persistence: None,
                ..Config::default()
            })]

            // The testing API delivers configurations as text; the proxy delivers bytes.
            #[test]
            fn any_bytes_are_a_configuration_or_an_error_naming_where(
                bytes in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..64),
                    // JSON's characters with bytes that are not UTF-8 among them.
                    prop::collection::vec(
                        prop::sample::select(b"{}[]\":, 0123456789servicePortupstreams\xff\xc3\x80".to_vec()),
                        0..48,
                    ),
                ]
            ) {
                if let Err(error) = parse::<Sample>(&bytes) {
                    let message = error.to_string();
                    prop_assert!(
                        message.contains("field `") || message.contains(" at line "),
                        "{bytes:?}: {message}"
                    );
                }
            }
        }
    }

    #[test]
    fn non_json_says_so() {
        let message = error("servicePort: 80");
        assert!(
            message.starts_with("invalid plugin configuration: not valid JSON"),
            "{message}"
        );
        assert!(error(r#"{"servicePort": 80} x"#).contains("text after the JSON value"));
    }
}
