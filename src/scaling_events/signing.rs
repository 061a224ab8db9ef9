//! Standard Webhooks v1 signatures (pure): `webhook-signature: v1,<base64
//! HMAC-SHA256 of "id.timestamp.body">`, one per secret, so that a receiver
//! rotating its key accepts either during the overlap.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const PREFIX: &str = "whsec_";

/// Signing keys, parsed from a Secret value. Never printed.
#[derive(Clone)]
pub struct Secrets(Vec<hmac::Key>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} keys, redacted)", self.0.len())
    }
}

/// Why a Secret value is not usable; says which entry, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("holds no secret (expected one or more whitespace-separated whsec_… values)")]
    Empty,
    #[error("secret #{0} does not start with whsec_")]
    NoPrefix(usize),
    #[error("secret #{0} is not base64 after whsec_")]
    NotBase64(usize),
    #[error("secret #{0} is empty after whsec_")]
    EmptyKey(usize),
}

impl Secrets {
    /// Every whitespace-separated `whsec_<base64>` value of `text`.
    pub fn parse(text: &str) -> Result<Secrets, SecretError> {
        let mut keys = Vec::new();
        for (i, word) in text.split_whitespace().enumerate() {
            let n = i + 1;
            let b64 = word.strip_prefix(PREFIX).ok_or(SecretError::NoPrefix(n))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| SecretError::NotBase64(n))?;
            if raw.is_empty() {
                return Err(SecretError::EmptyKey(n));
            }
            keys.push(hmac::Key::new(hmac::HMAC_SHA256, &raw));
        }
        if keys.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secrets(keys))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `webhook-signature` value: `v1,<sig>` per secret, space-separated.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut message = Vec::with_capacity(id.len() + body.len() + 24);
        message.extend_from_slice(id.as_bytes());
        message.push(b'.');
        message.extend_from_slice(timestamp.to_string().as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        self.0
            .iter()
            .map(|k| format!("v1,{}", STANDARD.encode(hmac::sign(k, &message).as_ref())))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The three Standard Webhooks headers.
pub fn headers(
    secrets: &Secrets,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    [
        (HEADER_ID, id.to_string()),
        (HEADER_TIMESTAMP, timestamp.to_string()),
        (HEADER_SIGNATURE, secrets.sign(id, timestamp, body)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification
    /// (standard-webhooks/spec/standard-webhooks.md, "Signature scheme").
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn the_spec_example_signs_to_the_published_signature() {
        let s = Secrets::parse(SPEC_SECRET).unwrap();
        assert_eq!(
            s.sign(SPEC_ID, SPEC_TS, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn an_independent_implementation_verifies_every_signature() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_dGhpcyBpcyB0aGUgbmV3IGtleSBhZnRlciByb3RhdGlvbg==";
        let both = Secrets::parse(&format!("{old}\n  {new}")).unwrap();
        assert_eq!(both.len(), 2);
        let body = br#"{"specversion":"1.0"}"#;
        let ts = jiff::Timestamp::now().as_second();
        let mut map = http::HeaderMap::new();
        for (k, v) in headers(&both, "evt-1", ts, body) {
            map.insert(k, v.parse().unwrap());
        }
        assert_eq!(
            map[HEADER_SIGNATURE].to_str().unwrap().split(' ').count(),
            2
        );
        for secret in [old, new] {
            standardwebhooks::Webhook::new(secret)
                .unwrap()
                .verify(body, &map)
                .unwrap_or_else(|e| panic!("{secret}: {e:?}"));
        }
        let other = standardwebhooks::Webhook::new("whsec_b3RoZXIga2V5").unwrap();
        assert!(
            other.verify(body, &map).is_err(),
            "an unknown key must not verify"
        );
        let mut tampered = map.clone();
        tampered.insert(HEADER_ID, "evt-2".parse().unwrap());
        assert!(
            standardwebhooks::Webhook::new(old)
                .unwrap()
                .verify(body, &tampered)
                .is_err()
        );
    }

    #[test]
    fn unusable_secrets_say_which_one_without_showing_it() {
        assert_eq!(Secrets::parse("  ").unwrap_err(), SecretError::Empty);
        assert_eq!(
            Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw hunter2").unwrap_err(),
            SecretError::NoPrefix(2)
        );
        let e = Secrets::parse("whsec_!!!notbase64").unwrap_err();
        assert_eq!(e, SecretError::NotBase64(1));
        assert!(!e.to_string().contains("notbase64"));
        assert!(!format!("{:?}", Secrets::parse(SPEC_SECRET).unwrap()).contains("MfKQ"));
    }
}
