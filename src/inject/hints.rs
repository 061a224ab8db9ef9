//! Go runtime hints from a container's final resources.
//!
//! Konsumerator set `GOMAXPROCS=1` for containers without a CPU limit and wrote
//! `GOMEMLIMIT` in MB labelled MiB (≈84 % instead of 80 %); konsumer does neither.

use crate::api::quantity::Milli;

use super::settings::Resources;

const MIB: i128 = 1 << 20;

/// Whole cores of the CPU limit (else the request), rounded up, at least 1;
/// `None` when the container has neither.
pub fn gomaxprocs(requests: &Resources, limits: &Resources) -> Option<String> {
    let cpu = limits.cpu.or(requests.cpu)?;
    let cores = cpu.units_ceil().max(1);
    Some(cores.to_string())
}

/// `ratio` of the memory limit in whole MiB (floor), `None` without a limit.
/// Below 1 MiB the value is written in bytes so that Go never gets a zero limit.
pub fn gomemlimit(limits: &Resources, ratio: f64) -> Option<String> {
    let memory = limits.memory?;
    if memory.0 <= 0 {
        return None;
    }
    let bytes = memory.units_floor();
    // ratio is a small positive fraction; scale to parts per million to stay exact.
    let ppm = (ratio.clamp(0.0, 1.0) * 1_000_000.0).round() as i128;
    let target = bytes.saturating_mul(ppm) / 1_000_000;
    let mib = target / MIB;
    Some(if mib >= 1 {
        format!("{mib}MiB")
    } else {
        target.max(1).to_string()
    })
}

/// Parses a user's quantity leniently: an unparsable value counts as absent.
pub fn lenient(q: Option<&str>) -> Option<Milli> {
    q.and_then(|s| Milli::parse(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: Option<&str>, memory: Option<&str>) -> Resources {
        Resources {
            cpu: lenient(cpu),
            memory: lenient(memory),
        }
    }

    #[test]
    fn gomaxprocs_rounding_table() {
        let none = Resources::default();
        for (limit, want) in [
            ("100m", "1"),
            ("1", "1"),
            ("1001m", "2"),
            ("1500m", "2"),
            ("2", "2"),
            ("3.2", "4"),
            ("64", "64"),
            ("1m", "1"),
        ] {
            assert_eq!(
                gomaxprocs(&none, &res(Some(limit), None)).as_deref(),
                Some(want),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn gomaxprocs_uses_the_request_without_a_limit_and_nothing_without_either() {
        let none = Resources::default();
        assert_eq!(
            gomaxprocs(&res(Some("2500m"), None), &none).as_deref(),
            Some("3")
        );
        assert_eq!(
            gomaxprocs(&res(Some("8"), None), &res(Some("2"), None)).as_deref(),
            Some("2"),
            "the limit wins over the request"
        );
        assert_eq!(gomaxprocs(&none, &none), None);
        assert_eq!(
            gomaxprocs(&res(None, Some("1Gi")), &res(None, Some("1Gi"))),
            None
        );
    }

    #[test]
    fn gomemlimit_rounding_table() {
        for (limit, want) in [
            ("128Mi", "102MiB"), // floor(0.8 × 128) = 102
            ("64Mi", "51MiB"),
            ("1Gi", "819MiB"),
            ("4Gi", "3276MiB"),
            ("100M", "76MiB"), // 80,000,000 B = 76.29 MiB
            ("400M", "305MiB"),
            ("1G", "762MiB"),
            ("1Mi", "838860"), // below 1 MiB: bytes
            ("1", "1"),
        ] {
            assert_eq!(
                gomemlimit(&res(None, Some(limit)), 0.8).as_deref(),
                Some(want),
                "limit {limit}"
            );
        }
    }

    #[test]
    fn gomemlimit_needs_a_limit_and_honours_the_ratio() {
        assert_eq!(gomemlimit(&Resources::default(), 0.8), None);
        assert_eq!(gomemlimit(&res(None, Some("0")), 0.8), None);
        assert_eq!(
            gomemlimit(&res(None, Some("1Gi")), 0.9).as_deref(),
            Some("921MiB")
        );
        assert_eq!(
            gomemlimit(&res(None, Some("1Gi")), 1.0).as_deref(),
            Some("1024MiB")
        );
    }
}
