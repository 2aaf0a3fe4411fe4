//! JSON Web Key Sets (RFC 7517): the public keys tokens are verified with.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// The smallest RSA modulus accepted, in bits: shorter keys are factorable in practice, and
/// every current identity provider publishes 2048-bit keys or longer.
pub const MIN_RSA_BITS: usize = 2048;

/// Base64url (RFC 4648 §5) as JOSE uses it: no padding is written; a reader ignores padding,
/// which some key servers add to JWK members.
pub(crate) const BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// A JWS signature algorithm this plugin verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Alg {
    /// The algorithm named `name` in a JOSE header (`RS256`, ...), if this plugin verifies it.
    /// `none` and the HMAC algorithms are not: a key set holds no shared secrets.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "RS384" => Some(Alg::Rs384),
            "RS512" => Some(Alg::Rs512),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

/// A public key of the set, usable for signatures.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key id (`kid`), which tokens name in their header.
    pub kid: Option<String>,
    /// The one algorithm the key may be used with (`alg`), when the set says.
    pub alg: Option<Alg>,
    material: Material,
}

#[derive(Debug, Clone)]
enum Material {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl Key {
    /// Whether the key can verify signatures made with `alg`.
    pub fn supports(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        match self.material {
            Material::Rsa(_) => matches!(alg, Alg::Rs256 | Alg::Rs384 | Alg::Rs512),
            Material::P256(_) => alg == Alg::Es256,
        }
    }

    /// Whether `signature` is a valid `alg` signature of `message` by this key. False for an
    /// algorithm the key does not support, and for a signature of the wrong shape.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.supports(alg) {
            return false;
        }
        match &self.material {
            Material::Rsa(key) => {
                let outcome = match alg {
                    Alg::Rs256 => key.verify(
                        Pkcs1v15Sign::new::<Sha256>(),
                        &Sha256::digest(message),
                        signature,
                    ),
                    Alg::Rs384 => key.verify(
                        Pkcs1v15Sign::new::<Sha384>(),
                        &Sha384::digest(message),
                        signature,
                    ),
                    Alg::Rs512 => key.verify(
                        Pkcs1v15Sign::new::<Sha512>(),
                        &Sha512::digest(message),
                        signature,
                    ),
                    Alg::Es256 => return false,
                };
                outcome.is_ok()
            }
            // JWS carries ECDSA signatures as the fixed-size `r || s` (RFC 7518 §3.4), not DER.
            Material::P256(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(message, &signature).is_ok()),
        }
    }
}

/// The keys of a JWKS document that this plugin can use.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    /// The usable keys, in the document's order.
    pub keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`). Keys this plugin cannot use (another key
    /// type or curve, `use` other than `sig`, an RSA key under [`MIN_RSA_BITS`], members that
    /// do not decode) are skipped, each with a warning; a document with no usable key at all is
    /// an error, so that a broken document never replaces a good key set.
    pub fn parse(body: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(body)
            .map_err(|error| format!("not a JWKS document: {error}"))?;
        let mut keys = Vec::new();
        for (index, jwk) in document.keys.iter().enumerate() {
            match parse_key(jwk) {
                Ok(key) => keys.push(key),
                Err(reason) => log::warn!("JWKS key {index} skipped: {reason}"),
            }
        }
        if keys.is_empty() {
            return Err(format!(
                "no usable key among the document's {} (RSA of at least {MIN_RSA_BITS} bits or EC P-256, for signatures)",
                document.keys.len()
            ));
        }
        Ok(KeySet { keys })
    }

    /// The key ids of the set, for log lines (`-` for a key without one).
    pub fn kids(&self) -> Vec<&str> {
        self.keys
            .iter()
            .map(|key| key.kid.as_deref().unwrap_or("-"))
            .collect()
    }

    /// Whether some key has the id `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid.as_deref() == Some(kid))
    }
}

fn parse_key(jwk: &serde_json::Value) -> Result<Key, String> {
    let member = |name: &str| -> Result<Option<&str>, String> {
        match jwk.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let kid = member("kid")?.map(str::to_string);
    let named = |reason: String| match &kid {
        Some(kid) => format!("kid `{kid}`: {reason}"),
        None => reason,
    };
    if let Some(usage) = member("use").map_err(named)?
        && usage != "sig"
    {
        return Err(named(format!("`use` is `{usage}`, not `sig`")));
    }
    let alg = match member("alg").map_err(named)? {
        None => None,
        Some(name) => Some(
            Alg::from_name(name).ok_or_else(|| named(format!("algorithm `{name}` unsupported")))?,
        ),
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let text = member(name)?.ok_or_else(|| format!("`{name}` is missing"))?;
        BASE64URL
            .decode(text)
            .map_err(|error| format!("`{name}` is not base64url: {error}"))
    };
    let material = match member("kty").map_err(named)? {
        Some("RSA") => {
            let n = BigUint::from_bytes_be(&bytes("n").map_err(named)?);
            let e = BigUint::from_bytes_be(&bytes("e").map_err(named)?);
            let key = RsaPublicKey::new(n, e)
                .map_err(|error| named(format!("not a usable RSA key: {error}")))?;
            let bits = key.n().bits();
            if bits < MIN_RSA_BITS {
                return Err(named(format!(
                    "RSA key of {bits} bits, under {MIN_RSA_BITS}"
                )));
            }
            Material::Rsa(key)
        }
        Some("EC") => {
            let curve = member("crv").map_err(named)?.unwrap_or_default();
            if curve != "P-256" {
                return Err(named(format!("curve `{curve}` unsupported (only P-256)")));
            }
            let x = bytes("x").map_err(named)?;
            let y = bytes("y").map_err(named)?;
            if x.len() != 32 || y.len() != 32 {
                return Err(named("P-256 coordinates must be 32 bytes each".to_string()));
            }
            // The SEC1 uncompressed point: 0x04, x, y; the parser checks it is on the curve.
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                .map_err(|_| named("not a point of P-256".to_string()))?;
            Material::P256(key)
        }
        Some(other) => return Err(named(format!("key type `{other}` unsupported"))),
        None => return Err(named("`kty` is missing".to_string())),
    };
    let key = Key {
        kid: kid.clone(),
        alg,
        material,
    };
    if let Some(alg) = alg
        && !key.supports(alg)
    {
        return Err(named(format!("`alg` {alg:?} does not fit the key type")));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a panic is a failed test")]

    use super::*;

    /// A P-256 public key (the RFC 7515 appendix A.3 example key).
    const EC_JWK: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec-1",
        "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    fn set(keys: &str) -> Result<KeySet, String> {
        KeySet::parse(format!(r#"{{"keys": [{keys}]}}"#).as_bytes())
    }

    #[test]
    fn parses_an_ec_key_and_skips_what_it_cannot_use() {
        let keys = set(&format!(
            r#"{{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
               {{"kty":"RSA","kid":"short","n":"AQAB","e":"AQAB"}},
               {{"kty":"EC","crv":"P-384","kid":"p384","x":"AA","y":"AA"}},
               {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"AA","y":"AA"}},
               {EC_JWK}"#
        ))
        .unwrap();
        assert_eq!(keys.kids(), ["ec-1"]);
        assert!(keys.keys[0].supports(Alg::Es256));
        assert!(!keys.keys[0].supports(Alg::Rs256));
        assert!(keys.has_kid("ec-1") && !keys.has_kid("hmac"));
    }

    #[test]
    fn a_document_without_usable_keys_is_an_error() {
        assert!(set("").unwrap_err().contains("no usable key"));
        assert!(
            set(r#"{"kty":"oct","k":"c2VjcmV0"}"#)
                .unwrap_err()
                .contains("no usable key among the document's 1")
        );
        assert!(
            KeySet::parse(b"<html>")
                .unwrap_err()
                .starts_with("not a JWKS document")
        );
        assert!(KeySet::parse(br#"{"keys": {}}"#).is_err());
    }

    #[test]
    fn odd_members_are_reasons_not_panics() {
        for jwk in [
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"AAAA"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"!!","y":"!!"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"}"#,
            r#"{"kty":"RSA","n":"AA","e":"AA"}"#,
            r#"{"kty":"RSA","n":5,"e":"AQAB"}"#,
            r#"{"kty":"RSA"}"#,
            r#"{"kid":7}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"kty":"EC","crv":"P-256","alg":"RS256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(jwk).unwrap();
            assert!(parse_key(&value).is_err(), "{jwk}");
        }
    }

    #[test]
    fn verifies_the_rfc_7515_es256_example() {
        let keys = set(EC_JWK).unwrap();
        // RFC 7515 appendix A.3.1: the signing input and its signature.
        let input = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        let signature = BASE64URL
            .decode("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q")
            .unwrap();
        let key = &keys.keys[0];
        assert!(key.verify(Alg::Es256, input.as_bytes(), &signature));
        assert!(!key.verify(Alg::Es256, b"something else", &signature));
        assert!(!key.verify(Alg::Rs256, input.as_bytes(), &signature));
        assert!(!key.verify(Alg::Es256, input.as_bytes(), &signature[..63]));
        assert!(!key.verify(Alg::Es256, input.as_bytes(), &[]));
    }
}
