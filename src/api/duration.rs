//! Go duration strings (`metav1.Duration`): `"300ms"`, `"1h30m"`, `"-1.5h"`.
//!
//! The crates on crates.io that port `time.ParseDuration` index bytes by char count
//! (panics on `µs`) or loop forever on long fractions, which is not acceptable for
//! input a webhook receives, so the grammar is parsed here.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("not a duration (expected a Go duration such as 30s, 5m or 1h30m)")]
    Syntax(String),
    #[error("unknown unit {1:?} (valid units are ns, us, ms, s, m, h)")]
    Unit(String, String),
    #[error("must not be negative")]
    Negative(String),
    #[error("out of range")]
    Range(String),
}

/// Parses a Go duration into nanoseconds (signed, as Go does).
pub fn parse_go_duration_nanos(input: &str) -> Result<i128, DurationError> {
    let syntax = || DurationError::Syntax(input.to_string());
    let mut s = input;
    let negative = if let Some(rest) = s.strip_prefix('-') {
        s = rest;
        true
    } else {
        s = s.strip_prefix('+').unwrap_or(s);
        false
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() || input.len() > 64 {
        return Err(syntax());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(syntax)?;
        let (number, rest) = s.split_at(num_end);
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_end);
        s = rest;
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(syntax());
        }
        let unit_nanos: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(syntax()),
            other => return Err(DurationError::Unit(input.to_string(), other.to_string())),
        };
        let range = || DurationError::Range(input.to_string());
        let whole: i128 = if int_part.is_empty() {
            0
        } else if int_part.len() > 20 {
            return Err(range());
        } else {
            int_part.parse().map_err(|_| syntax())?
        };
        let mut value = whole.checked_mul(unit_nanos).ok_or_else(range)?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut scale = unit_nanos;
        for digit in frac_part.bytes().take(20) {
            scale /= 10;
            value += i128::from(digit - b'0') * scale;
        }
        total = total.checked_add(value).ok_or_else(range)?;
        if total > i128::from(i64::MAX) {
            return Err(range());
        }
    }
    Ok(if negative { -total } else { total })
}

/// Parses a non-negative Go duration.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let nanos = parse_go_duration_nanos(input)?;
    if nanos < 0 {
        return Err(DurationError::Negative(input.to_string()));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats a duration the way Go prints it (`1h30m0s`, `5m0s`, `1.5s`).
pub fn format_go_duration(d: Duration) -> String {
    let total = d.as_nanos();
    if total == 0 {
        return "0s".to_string();
    }
    let secs = d.as_secs();
    if secs == 0 {
        return if total < 1_000 {
            format!("{total}ns")
        } else if total < 1_000_000 {
            format!("{}µs", trim_fraction(total, 1_000))
        } else {
            format!("{}ms", trim_fraction(total, 1_000_000))
        };
    }
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = trim_fraction(total % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn go_duration_forms_parse() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("5m", 300_000_000_000),
            ("1h30m", 5_400_000_000_000),
            ("1.5h", 5_400_000_000_000),
            ("300ms", 300_000_000),
            ("2µs", 2_000),
            ("2us", 2_000),
            ("-1m", -60_000_000_000),
            ("1h0m0s", 3_600_000_000_000),
            (".5s", 500_000_000),
            ("1.000000000001s", 1_000_000_000),
        ];
        for (s, want) in cases {
            assert_eq!(parse_go_duration_nanos(s), Ok(*want), "{s}");
        }
    }

    #[test]
    fn malformed_durations_are_errors() {
        for bad in [
            "",
            "5",
            "m",
            "1d",
            "5 m",
            "1.2.3s",
            "-",
            ".s",
            "1hh",
            "99999999999999999999h",
        ] {
            assert!(parse_go_duration_nanos(bad).is_err(), "{bad:?} parsed");
        }
        assert!(matches!(parse_go_duration("1d"), Err(DurationError::Unit(_, u)) if u == "d"));
        assert!(matches!(
            parse_go_duration("-5m"),
            Err(DurationError::Negative(_))
        ));
    }

    #[test]
    fn durations_format_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(format_go_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = parse_go_duration_nanos(&s);
        }

        #[test]
        fn long_fractions_terminate(digits in "[0-9]{1,60}") {
            let _ = parse_go_duration_nanos(&format!("1.{digits}s"));
        }

        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000_000) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_go_duration(&format_go_duration(d)), Ok(d));
        }
    }
}
