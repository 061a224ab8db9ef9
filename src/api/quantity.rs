//! Kubernetes resource quantities, parsed exactly (integer arithmetic).
//!
//! `kube_quantity` goes through `f64`; a webhook that compares `0.1` with `100m` or
//! multiplies `ramPerCore` needs exact values, so quantities are parsed here into
//! milli-units (`i128`), the unit Kubernetes itself rounds to (`MilliValue`).

use std::fmt;

/// A parsed quantity in thousandths of the base unit (millicores, millibytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Milli(pub i128);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "{0:?} is not a quantity (expected a number with an optional suffix such as 500m, 2, 128Mi or 1G)"
    )]
    Syntax(String),
    #[error("{0:?} is out of range")]
    Range(String),
}

const MAX_DIGITS: usize = 40;

impl Milli {
    pub const ZERO: Milli = Milli(0);

    pub fn from_cores_milli(m: i64) -> Self {
        Milli(m as i128)
    }

    pub fn from_units(u: i64) -> Self {
        Milli(u as i128 * 1000)
    }

    /// Value in thousandths, saturating into `i64`.
    pub fn millis(self) -> i64 {
        self.0.clamp(i64::MIN as i128, i64::MAX as i128) as i64
    }

    /// Whole units rounded up (bytes for memory, cores for cpu).
    pub fn units_ceil(self) -> i128 {
        self.0.div_euclid(1000) + i128::from(self.0.rem_euclid(1000) != 0)
    }

    /// Whole units rounded down.
    pub fn units_floor(self) -> i128 {
        self.0.div_euclid(1000)
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// Parses a Kubernetes quantity (`resource.Quantity` grammar):
    /// `<sign><digits>[.<digits>]<suffix>`, suffix one of the binary SI (`Ki`..`Ei`),
    /// decimal SI (`n u m "" k M G T P E`) or a decimal exponent (`e3`, `E-2`).
    /// Fractions of a milli-unit are rounded up, as Kubernetes does.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let syntax = || QuantityError::Syntax(input.to_string());
        let s = input.trim();
        if s.is_empty() || s.len() > 64 {
            return Err(syntax());
        }
        let (negative, s) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty())
            || frac_part.contains('.')
            || int_part.len() + frac_part.len() > MAX_DIGITS
        {
            return Err(syntax());
        }
        // mantissa = digits as an integer, value = mantissa * 10^-frac_len * multiplier
        let mut mantissa: i128 = 0;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(b - b'0')))
                .ok_or_else(|| QuantityError::Range(input.to_string()))?;
        }
        let frac_len = frac_part.len() as i32;
        // (numerator, power of ten) of the suffix multiplier
        let (binary, exp10): (u32, i32) = match suffix {
            "" => (0, 0),
            "n" => (0, -9),
            "u" => (0, -6),
            "m" => (0, -3),
            "k" => (0, 3),
            "M" => (0, 6),
            "G" => (0, 9),
            "T" => (0, 12),
            "P" => (0, 15),
            "E" => (0, 18),
            "Ki" => (10, 0),
            "Mi" => (20, 0),
            "Gi" => (30, 0),
            "Ti" => (40, 0),
            "Pi" => (50, 0),
            "Ei" => (60, 0),
            other => {
                let exp = other
                    .strip_prefix('e')
                    .or_else(|| other.strip_prefix('E'))
                    .ok_or_else(syntax)?;
                let digits = exp.strip_prefix(['-', '+']).unwrap_or(exp);
                if digits.is_empty()
                    || digits.len() > 3
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(syntax());
                }
                (0, exp.parse::<i32>().map_err(|_| syntax())?)
            }
        };
        // milli = mantissa * 2^binary * 10^(exp10 + 3 - frac_len)
        let range = || QuantityError::Range(input.to_string());
        let mut value = mantissa.checked_mul(1i128 << binary).ok_or_else(range)?;
        let pow = exp10 + 3 - frac_len;
        if pow >= 0 {
            let factor = 10i128.checked_pow(pow as u32).ok_or_else(range)?;
            value = value.checked_mul(factor).ok_or_else(range)?;
        } else {
            let divisor = 10i128.checked_pow((-pow) as u32);
            value = match divisor {
                Some(d) => value / d + i128::from(value % d != 0),
                None => i128::from(value != 0),
            };
        }
        if value > i128::from(i64::MAX) * 1000 {
            return Err(range());
        }
        Ok(Milli(if negative { -value } else { value }))
    }

    /// Canonical CPU form: whole cores when exact (`2`), millicores otherwise (`1500m`).
    pub fn cpu_string(self) -> String {
        if self.0 % 1000 == 0 {
            format!("{}", self.0 / 1000)
        } else {
            format!("{}m", self.0)
        }
    }

    /// Canonical memory form: the largest unit, binary or decimal, that divides
    /// the value exactly (`128Mi`, `400M`, `1Gi`), else bytes (rounded up).
    pub fn memory_string(self) -> String {
        let bytes = self.units_ceil();
        if bytes == 0 {
            return "0".to_string();
        }
        const UNITS: [(&str, i128); 12] = [
            ("Ei", 1 << 60),
            ("E", 1_000_000_000_000_000_000),
            ("Pi", 1 << 50),
            ("P", 1_000_000_000_000_000),
            ("Ti", 1 << 40),
            ("T", 1_000_000_000_000),
            ("Gi", 1 << 30),
            ("G", 1_000_000_000),
            ("Mi", 1 << 20),
            ("M", 1_000_000),
            ("Ki", 1 << 10),
            ("k", 1_000),
        ];
        for (suffix, unit) in UNITS {
            if bytes % unit == 0 {
                return format!("{}{}", bytes / unit, suffix);
            }
        }
        bytes.to_string()
    }
}

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl std::ops::Add for Milli {
    type Output = Milli;
    fn add(self, rhs: Milli) -> Milli {
        Milli(self.0.saturating_add(rhs.0))
    }
}

impl std::ops::Sub for Milli {
    type Output = Milli;
    fn sub(self, rhs: Milli) -> Milli {
        Milli(self.0.saturating_sub(rhs.0))
    }
}

impl std::iter::Sum for Milli {
    fn sum<I: Iterator<Item = Milli>>(iter: I) -> Milli {
        iter.fold(Milli::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(s: &str) -> i128 {
        Milli::parse(s).unwrap().0
    }

    #[test]
    fn cpu_and_memory_forms_parse_to_milli_units() {
        assert_eq!(m("100m"), 100);
        assert_eq!(m("0.1"), 100);
        assert_eq!(m("2"), 2000);
        assert_eq!(m("1.5"), 1500);
        assert_eq!(m("128Mi"), 128 * 1024 * 1024 * 1000);
        assert_eq!(m("1G"), 1_000_000_000_000);
        assert_eq!(m("100M"), 100_000_000_000);
        assert_eq!(m("1e3"), 1_000_000);
        assert_eq!(m("1E-3"), 1);
        assert_eq!(m("+5k"), 5_000_000);
        assert_eq!(m("-1"), -1000);
        assert_eq!(m(".5"), 500);
        assert_eq!(m("5."), 5000);
    }

    #[test]
    fn sub_milli_fractions_round_up_like_kubernetes() {
        assert_eq!(m("1n"), 1);
        assert_eq!(m("0.0001"), 1);
        assert_eq!(m("1500u"), 2);
        assert_eq!(m("0"), 0);
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for bad in [
            "", "m", "1.2.3", "12Mb", "1 Gi", "abc", "1e", "1e+", "--1", "1ki", "0x10", "1e99999",
            "Mi", ".", "1.5.Mi",
        ] {
            assert!(Milli::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn huge_quantities_are_range_errors_not_overflows() {
        assert!(matches!(
            Milli::parse("99999999999999999999999Ei"),
            Err(QuantityError::Range(_))
        ));
    }

    #[test]
    fn canonical_forms_match_kubernetes_style() {
        assert_eq!(Milli(100).cpu_string(), "100m");
        assert_eq!(Milli(2000).cpu_string(), "2");
        assert_eq!(Milli::parse("128Mi").unwrap().memory_string(), "128Mi");
        assert_eq!(Milli::parse("200M").unwrap().memory_string(), "200M");
        assert_eq!(Milli::parse("1024Mi").unwrap().memory_string(), "1Gi");
        assert_eq!(Milli::parse("1001").unwrap().memory_string(), "1001");
        assert_eq!(
            Milli::parse("400M").unwrap().memory_string(),
            "400M",
            "not 390625Ki"
        );
        assert_eq!(Milli::parse("1000Mi").unwrap().memory_string(), "1000Mi");
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,30}") {
            let _ = Milli::parse(&s);
        }

        #[test]
        fn cpu_string_round_trips(v in 0i64..10_000_000) {
            let q = Milli(v as i128);
            prop_assert_eq!(Milli::parse(&q.cpu_string()).unwrap(), q);
        }

        #[test]
        fn memory_string_round_trips_whole_bytes(b in 0i64..(1i64 << 50)) {
            let q = Milli(b as i128 * 1000);
            prop_assert_eq!(Milli::parse(&q.memory_string()).unwrap(), q);
        }
    }
}
