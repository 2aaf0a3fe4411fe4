//! JSON Web Tokens (RFC 7519) in the JWS compact form: parsing, claim checks, signatures.
//!
//! Every way a token can be wrong is a [`Rejection`], never a panic: the token is the client's
//! input.

use base64::Engine as _;

use crate::jwks::{Alg, BASE64URL, KeySet};

/// Why a request was refused. The messages are Envoy's `jwt_authn` ones, so that dashboards
/// and runbooks written for Envoy read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `Authorization: Bearer` token.
    Missing,
    /// More than one `Authorization` header: which one would the upstream believe?
    Ambiguous,
    /// Not three base64url sections separated by dots.
    BadFormat,
    /// The header does not decode, is not a JSON object, or has no string `alg`.
    BadHeader,
    /// The payload does not decode, is not a JSON object, or a registered claim has the wrong
    /// type.
    BadPayload,
    /// The signature section does not decode.
    BadSignature,
    /// `alg` is `none`, an HMAC algorithm, or one this plugin does not know.
    UnsupportedAlg,
    /// `iss` is not the configured issuer.
    UnknownIssuer,
    /// `exp` has passed (beyond the clock skew).
    Expired,
    /// `nbf` is still ahead (beyond the clock skew).
    NotYetValid,
    /// The configuration requires `exp` and the token has none.
    NoExpiration,
    /// None of the token's audiences is configured.
    AudienceNotAllowed,
    /// No key of the set has the token's `kid` (or fits its `alg`).
    NoMatchingKey,
    /// The signature does not verify.
    VerificationFailed,
    /// No key set could be fetched yet.
    KeysUnavailable,
}

impl Rejection {
    /// The status of the local reply: 403 for a token that is valid but not meant for this
    /// service (as Envoy), 503 when the keys are missing (the token may well be good: the
    /// client should retry, not discard it), 401 otherwise.
    pub fn status(self) -> u16 {
        match self {
            Rejection::AudienceNotAllowed => 403,
            Rejection::KeysUnavailable => 503,
            _ => 401,
        }
    }

    /// The reply's body.
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Missing => "Jwt is missing",
            Rejection::Ambiguous => "Jwt is ambiguous: more than one Authorization header",
            Rejection::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Rejection::BadHeader => "Jwt header is an invalid JSON",
            Rejection::BadPayload => "Jwt payload is an invalid JSON",
            Rejection::BadSignature => "Jwt signature is an invalid Base64url input",
            Rejection::UnsupportedAlg => "Jwt header [alg] is not supported",
            Rejection::UnknownIssuer => "Jwt issuer is not configured",
            Rejection::Expired => "Jwt is expired",
            Rejection::NotYetValid => "Jwt not yet valid",
            Rejection::NoExpiration => "Jwt has no expiration",
            Rejection::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Rejection::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Rejection::VerificationFailed => "Jwt verification fails",
            Rejection::KeysUnavailable => "Jwks remote fetch is failed",
        }
    }

    /// The response code details, as Envoy writes them: `jwt_authn_access_denied{Jwt_is_expired}`.
    pub fn details(self) -> String {
        format!(
            "jwt_authn_access_denied{{{}}}",
            self.message().replace(' ', "_")
        )
    }
}

/// The claim checks of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// The required `iss`, if any.
    pub issuer: Option<&'a str>,
    /// The accepted audiences; empty accepts any (and none).
    pub audiences: &'a [String],
    /// Whether a token without `exp` is refused.
    pub require_expiration: bool,
    /// The tolerance on `exp` and `nbf`, in seconds.
    pub clock_skew_s: u64,
}

/// A token parsed from its compact form, signature not yet checked.
#[derive(Debug)]
pub struct Token<'a> {
    /// The signature algorithm of the header.
    pub alg: Alg,
    /// The key id of the header.
    pub kid: Option<String>,
    /// The payload's `sub`, when it is a string.
    pub sub: Option<String>,
    /// The payload section as the token has it (base64url), for forwarding.
    pub payload_b64: &'a str,
    issuer: Option<String>,
    audiences: Vec<String>,
    expires: Option<i64>,
    not_before: Option<i64>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> Token<'a> {
    /// Parses `header.payload.signature`.
    pub fn parse(compact: &'a str) -> Result<Token<'a>, Rejection> {
        let mut sections = compact.split('.');
        let (Some(header), Some(payload), Some(signature), None) = (
            sections.next(),
            sections.next(),
            sections.next(),
            sections.next(),
        ) else {
            return Err(Rejection::BadFormat);
        };
        let signing_input = compact
            .get(..header.len() + 1 + payload.len())
            .ok_or(Rejection::BadFormat)?;

        let header = decode_object(header).ok_or(Rejection::BadHeader)?;
        let alg = match header.get("alg") {
            Some(serde_json::Value::String(name)) => {
                Alg::from_name(name).ok_or(Rejection::UnsupportedAlg)?
            }
            _ => return Err(Rejection::BadHeader),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(serde_json::Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Rejection::BadHeader),
        };

        let claims = decode_object(payload).ok_or(Rejection::BadPayload)?;
        let issuer = optional_string(&claims, "iss")?;
        let sub = optional_string(&claims, "sub")?;
        let audiences = match claims.get("aud") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(audience)) => vec![audience.clone()],
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Rejection::BadPayload)?,
            Some(_) => return Err(Rejection::BadPayload),
        };
        let expires = numeric_date(&claims, "exp")?;
        let not_before = numeric_date(&claims, "nbf")?;

        let signature = BASE64URL
            .decode(signature)
            .map_err(|_| Rejection::BadSignature)?;
        Ok(Token {
            alg,
            kid,
            sub,
            payload_b64: payload,
            issuer,
            audiences,
            expires,
            not_before,
            signing_input,
            signature,
        })
    }

    /// Checks issuer, time (`now`: seconds since the Unix epoch) and audience, in Envoy's
    /// order: the cheap checks come before any signature is verified.
    pub fn check_claims(&self, checks: &Checks<'_>, now: i64) -> Result<(), Rejection> {
        if let Some(issuer) = checks.issuer
            && self.issuer.as_deref() != Some(issuer)
        {
            return Err(Rejection::UnknownIssuer);
        }
        let skew = i64::try_from(checks.clock_skew_s).unwrap_or(i64::MAX);
        if let Some(not_before) = self.not_before
            && now.saturating_add(skew) < not_before
        {
            return Err(Rejection::NotYetValid);
        }
        match self.expires {
            Some(expires) if now > expires.saturating_add(skew) => {
                return Err(Rejection::Expired);
            }
            None if checks.require_expiration => return Err(Rejection::NoExpiration),
            _ => {}
        }
        if !checks.audiences.is_empty()
            && !self
                .audiences
                .iter()
                .any(|audience| checks.audiences.contains(audience))
        {
            return Err(Rejection::AudienceNotAllowed);
        }
        Ok(())
    }

    /// Verifies the signature with the keys of `keys` that fit: the one with the token's
    /// `kid` when it has one, else every key that supports its `alg`.
    pub fn verify(&self, keys: &KeySet) -> Result<(), Rejection> {
        let mut candidates = keys
            .keys
            .iter()
            .filter(|key| match &self.kid {
                Some(kid) => key.kid.as_deref() == Some(kid),
                None => true,
            })
            .filter(|key| key.supports(self.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(Rejection::NoMatchingKey);
        }
        let message = self.signing_input.as_bytes();
        if candidates.any(|key| key.verify(self.alg, message, &self.signature)) {
            Ok(())
        } else {
            Err(Rejection::VerificationFailed)
        }
    }
}

/// The token of an `Authorization` value: `Bearer <token>`, the scheme in any case (RFC 9110
/// §11.1), the token trimmed. `None` for another scheme or an empty token.
pub fn bearer_token(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

fn decode_object(section: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let bytes = BASE64URL.decode(section).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

fn optional_string(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<String>, Rejection> {
    match claims.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(Rejection::BadPayload),
    }
}

/// A NumericDate claim (RFC 7519 §2): seconds since the epoch, possibly fractional (truncated
/// here; the clock skew dwarfs the fraction).
fn numeric_date(
    claims: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<i64>, Rejection> {
    match claims.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(number)) => match number.as_i64() {
            Some(seconds) => Ok(Some(seconds)),
            // A float (or a u64 past i64): `as` saturates, and a date that far out is still
            // ordered right against any clock.
            #[allow(
                clippy::cast_possible_truncation,
                reason = "saturating on purpose, see above"
            )]
            None => Ok(number.as_f64().map(|seconds| seconds.floor() as i64)),
        },
        Some(_) => Err(Rejection::BadPayload),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a panic is a failed test")]

    use super::*;

    fn section(json: &str) -> String {
        BASE64URL.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", section(header), section(payload))
    }

    const NO_CHECKS: Checks<'static> = Checks {
        issuer: None,
        audiences: &[],
        require_expiration: false,
        clock_skew_s: 60,
    };

    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc  "), Some("abc"));
        assert_eq!(bearer_token("BEARER abc"), Some("abc"));
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("abc"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn parses_header_and_claims() {
        let compact = token(
            r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"i","sub":"alice","aud":["a","b"],"exp":100.9,"nbf":10}"#,
        );
        let parsed = Token::parse(&compact).unwrap();
        assert_eq!(parsed.alg, Alg::Rs256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.sub.as_deref(), Some("alice"));
        assert_eq!(parsed.audiences, ["a", "b"]);
        assert_eq!(parsed.expires, Some(100));
        assert_eq!(parsed.not_before, Some(10));
        assert_eq!(parsed.signature, b"sig");
        assert_eq!(compact.split('.').nth(1), Some(parsed.payload_b64));
    }

    #[test]
    fn malformed_tokens_are_rejections() {
        let good_payload = section(r#"{"sub":"a"}"#);
        let rs256 = section(r#"{"alg":"RS256"}"#);
        let cases = [
            ("", Rejection::BadFormat),
            ("a.b", Rejection::BadFormat),
            ("a.b.c.d", Rejection::BadFormat),
            ("..", Rejection::BadHeader),
            (&format!("!!.{good_payload}.c2ln"), Rejection::BadHeader),
            (
                &format!("{}.{good_payload}.c2ln", section("[1]")),
                Rejection::BadHeader,
            ),
            (
                &format!("{}.{good_payload}.c2ln", section("{}")),
                Rejection::BadHeader,
            ),
            (
                &format!("{}.{good_payload}.c2ln", section(r#"{"alg":5}"#)),
                Rejection::BadHeader,
            ),
            (
                &format!(
                    "{}.{good_payload}.c2ln",
                    section(r#"{"alg":"RS256","kid":1}"#)
                ),
                Rejection::BadHeader,
            ),
            (
                &format!("{}.{good_payload}.", section(r#"{"alg":"none"}"#)),
                Rejection::UnsupportedAlg,
            ),
            (
                &format!("{}.{good_payload}.c2ln", section(r#"{"alg":"HS256"}"#)),
                Rejection::UnsupportedAlg,
            ),
            (&format!("{rs256}.!!.c2ln"), Rejection::BadPayload),
            (
                &format!("{rs256}.{}.c2ln", section("\"text\"")),
                Rejection::BadPayload,
            ),
            (
                &format!("{rs256}.{}.c2ln", section(r#"{"exp":"soon"}"#)),
                Rejection::BadPayload,
            ),
            (
                &format!("{rs256}.{}.c2ln", section(r#"{"aud":[1]}"#)),
                Rejection::BadPayload,
            ),
            (
                &format!("{rs256}.{}.c2ln", section(r#"{"iss":{}}"#)),
                Rejection::BadPayload,
            ),
            (
                &format!("{rs256}.{good_payload}.!!"),
                Rejection::BadSignature,
            ),
        ];
        for (compact, expected) in cases {
            assert_eq!(Token::parse(compact).err(), Some(expected), "{compact}");
        }
    }

    #[test]
    fn time_checks_allow_the_skew() {
        let check = |payload: &str, now: i64| {
            Token::parse(&token(r#"{"alg":"RS256"}"#, payload))
                .unwrap()
                .check_claims(&NO_CHECKS, now)
        };
        assert_eq!(check(r#"{"exp":1000}"#, 1060), Ok(()));
        assert_eq!(check(r#"{"exp":1000}"#, 1061), Err(Rejection::Expired));
        assert_eq!(check(r#"{"nbf":1000}"#, 940), Ok(()));
        assert_eq!(check(r#"{"nbf":1000}"#, 939), Err(Rejection::NotYetValid));
        assert_eq!(check(r#"{"exp":1e300}"#, 0), Ok(()));
        assert_eq!(check(r#"{"exp":-1e300}"#, 0), Err(Rejection::Expired));
        assert_eq!(check(r#"{"exp":18446744073709551615}"#, 0), Ok(()));
        assert_eq!(check("{}", 0), Ok(()));
        let strict = Checks {
            require_expiration: true,
            ..NO_CHECKS
        };
        let compact = token(r#"{"alg":"RS256"}"#, "{}");
        let parsed = Token::parse(&compact).unwrap();
        assert_eq!(
            parsed.check_claims(&strict, 0),
            Err(Rejection::NoExpiration)
        );
    }

    #[test]
    fn issuer_and_audiences() {
        let audiences = ["api".to_string(), "web".to_string()];
        let checks = Checks {
            issuer: Some("https://idp"),
            audiences: &audiences,
            ..NO_CHECKS
        };
        let check = |payload: &str| {
            Token::parse(&token(r#"{"alg":"RS256"}"#, payload))
                .unwrap()
                .check_claims(&checks, 0)
        };
        assert_eq!(check(r#"{"iss":"https://idp","aud":"web"}"#), Ok(()));
        assert_eq!(check(r#"{"iss":"https://idp","aud":["x","api"]}"#), Ok(()));
        assert_eq!(
            check(r#"{"iss":"https://idp","aud":"x"}"#),
            Err(Rejection::AudienceNotAllowed)
        );
        assert_eq!(
            check(r#"{"iss":"https://idp"}"#),
            Err(Rejection::AudienceNotAllowed)
        );
        assert_eq!(
            check(r#"{"iss":"https://other","aud":"api"}"#),
            Err(Rejection::UnknownIssuer)
        );
        assert_eq!(check(r#"{"aud":"api"}"#), Err(Rejection::UnknownIssuer));
    }

    #[test]
    fn statuses_and_details() {
        assert_eq!(Rejection::Expired.status(), 401);
        assert_eq!(Rejection::AudienceNotAllowed.status(), 403);
        assert_eq!(Rejection::KeysUnavailable.status(), 503);
        assert_eq!(
            Rejection::Missing.details(),
            "jwt_authn_access_denied{Jwt_is_missing}"
        );
    }
}
