//! The retry schedule (pure): exponential backoff with full jitter, 1 s up to
//! 5 min, and the receiver's `Retry-After` (seconds or an HTTP date) honoured up
//! to the same cap.

use std::time::{Duration, SystemTime};

pub const BASE: Duration = Duration::from_secs(1);
pub const CAP: Duration = Duration::from_secs(300);

/// The ceiling of the `attempt`-th retry (1-based): 1 s, 2 s, 4 s, … capped.
pub fn ceiling(attempt: u32) -> Duration {
    let shift = attempt.saturating_sub(1).min(20);
    BASE.saturating_mul(1u32 << shift).min(CAP)
}

/// Full jitter: uniformly in `[0, ceiling]`, with `random` in `[0, 1)`.
pub fn full_jitter(attempt: u32, random: f64) -> Duration {
    ceiling(attempt).mul_f64(random.clamp(0.0, 1.0))
}

/// A `Retry-After` header value: delay-seconds or an HTTP date (in the past: 0).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt.
pub fn delay(attempt: u32, random: f64, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(d) => d.min(CAP),
        None => full_jitter(attempt, random),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ceiling_doubles_from_one_second_to_five_minutes() {
        let c: Vec<u64> = (1..=11).map(|a| ceiling(a).as_secs()).collect();
        assert_eq!(c, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(ceiling(u32::MAX), CAP);
        assert_eq!(ceiling(0), BASE);
    }

    proptest! {
        #[test]
        fn jitter_stays_within_zero_and_the_ceiling(attempt in 0u32..10_000, r in 0.0f64..1.0) {
            let d = full_jitter(attempt, r);
            prop_assert!(d <= ceiling(attempt));
            prop_assert!(d <= CAP);
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_is_capped() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(delay(1, 0.5, Some(Duration::from_secs(3600))), CAP);
        assert_eq!(
            delay(1, 0.5, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(delay(3, 0.5, None), Duration::from_secs(2));
    }
}
