//! Which backends each plugin's scenarios run on: a scenario that quietly ran natively alone
//! would prove nothing about the compiled plugin, so every plugin is checked here: each runs
//! on its module and its component, Redis, background tasks, gRPC and shared queues included.

use proxy_async::testing::{PluginTest, TwinKind};

const BOTH: &[TwinKind] = &[TwinKind::Module, TwinKind::Component];

#[test]
fn the_examples_run_on_the_module_and_the_component() {
    fn twins<P: proxy_async::Plugin>(config: &str) -> Vec<TwinKind> {
        PluginTest::<P>::new(config)
            .unwrap_or_else(|error| panic!("{}: {error}", std::any::type_name::<P>()))
            .twins()
    }
    assert_eq!(twins::<hello::Hello>(r#"{"mockEnable": false}"#), BOTH);
    assert_eq!(twins::<hello_no_config::HelloNoConfig>(""), BOTH);
    assert_eq!(
        twins::<http_call::HttpCall>(
            r#"{"serviceSource": "ip", "serviceName": "foo", "servicePort": 80, "requestPath": "/token"}"#
        ),
        BOTH
    );
    assert_eq!(
        twins::<auth_flow::AuthFlow>(r#"{"auth": {"cluster": "a"}, "users": {"cluster": "u"}}"#),
        BOTH
    );
    assert_eq!(
        twins::<fan_out::FanOut>(
            r#"{"profile": {"cluster": "p", "path": "/p"}, "flags": {"cluster": "f", "path": "/f"}}"#
        ),
        BOTH
    );
    assert_eq!(
        twins::<retry::Retry>(r#"{"check": {"cluster": "check"}}"#),
        BOTH
    );
    assert_eq!(
        twins::<stream_redact::StreamRedact>(r#"{"patterns": ["secret"]}"#),
        BOTH
    );
    // A plugin that sends Redis commands, and one with background tasks.
    assert_eq!(
        twins::<key_auth_redis::KeyAuthRedis>(r#"{"redis": {"service_name": "redis.static"}}"#),
        BOTH
    );
    assert_eq!(
        twins::<jwt_auth::JwtAuth>(
            r#"{"jwks": {"cluster": "idp", "path": "/jwks"}, "issuer": "https://idp", "audiences": ["api"]}"#
        ),
        BOTH
    );
}

#[test]
fn the_fixtures_run_on_the_module_and_the_component() {
    assert_eq!(
        PluginTest::<stream_plugin::StreamPlugin>::new(r#"{"mode": "chunks"}"#)
            .unwrap()
            .twins(),
        BOTH
    );
    assert_eq!(
        PluginTest::<upload_plugin::UploadPlugin>::new("")
            .unwrap()
            .twins(),
        BOTH
    );
    assert_eq!(
        PluginTest::<state_plugin::StatePlugin>::new(r#"{"mode": "metrics"}"#)
            .unwrap()
            .twins(),
        BOTH
    );
    assert_eq!(
        PluginTest::<calls_plugin::CallsPlugin>::new(r#"{"mode": "background"}"#)
            .unwrap()
            .twins(),
        BOTH
    );
}
