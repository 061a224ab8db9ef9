//! Signing secrets the api makes (`whsec_` + base64 of 32 random bytes, as
//! Standard Webhooks) and their rotation (pure): a Secret key holds several
//! whitespace-separated secrets, every one signs, the newest first.

use base64::Engine;
use jiff::Timestamp;

use crate::api::ScalingSubscription;

/// On a ScalingSubscription whose secret was rotated through the api: when the
/// older secrets stop signing (RFC 3339).
pub const RETIRE_ANNOTATION: &str = "konsumer.dev/previous-secrets-expire";

pub fn fill_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    // The system's randomness failing leaves nothing safe to do.
    if ring::rand::SystemRandom::new().fill(buf).is_err() {
        panic!("the operating system's random number generator failed");
    }
}

/// A new signing secret.
pub fn generate() -> String {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The Secret value after adding `new`: it signs first, the others keep signing.
pub fn rotate(current: &str, new: &str) -> String {
    let mut out = vec![new];
    out.extend(current.split_whitespace().filter(|s| *s != new));
    out.join(" ")
}

/// The Secret value once the grace is over: the newest secret alone.
pub fn retire(current: &str) -> String {
    current
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// When the older secrets of `sub` stop signing, if a rotation is under way.
pub fn retire_at(sub: &ScalingSubscription) -> Option<Timestamp> {
    sub.metadata
        .annotations
        .as_ref()?
        .get(RETIRE_ANNOTATION)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_is_a_standard_webhooks_key() {
        let s = generate();
        let key = s.strip_prefix("whsec_").unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(bytes.len(), 32);
        assert_ne!(s, generate());
    }

    #[test]
    fn rotation_signs_with_the_new_secret_first_and_retires_the_old_ones() {
        let v = rotate("whsec_a whsec_b", "whsec_c");
        assert_eq!(v, "whsec_c whsec_a whsec_b");
        assert_eq!(retire(&v), "whsec_c");
        assert_eq!(rotate("", "whsec_c"), "whsec_c");
    }
}
