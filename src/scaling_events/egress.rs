//! Which addresses a subscriber URL may reach (pure): the SSRF guard's decision.
//! Everything that is not globally routable is refused — loopback, private,
//! link-local (cloud metadata), CGNAT, unique-local, multicast, documentation,
//! reserved — and the IPv4-mapped, -compatible, NAT64 and 6to4 forms of those,
//! unless an operator allowed the range (`--egress-allow`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is not globally routable.
pub fn non_global(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => "unspecified (0.0.0.0)",
        (0, _, _) => "\"this network\" (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space / CGNAT (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local, cloud metadata (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) => "documentation (192.0.2.0/24)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (198, 51, 100) => "documentation (198.51.100.0/24)",
        (203, 0, 113) => "documentation (203.0.113.0/24)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        _ if ip.is_broadcast() => "broadcast (255.255.255.255)",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries, in the forms that reach it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // ::a.b.c.d (compatible, deprecated); not :: and ::1 themselves
        [0, 0, 0, 0, 0, 0, _, _] if ip.segments()[6] != 0 => Some(tail),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    if let Some(v4) = embedded_v4(ip) {
        return v4_reason(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        0xff00..=0xffff => "multicast (ff00::/8)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10)",
        0xfc00..=0xfdff => "unique-local (fc00::/7)",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x3fff if s[1] < 0x1000 => "documentation (3fff::/20)",
        0x2001 if s[1] == 0x0002 && s[2] == 0 => "benchmarking (2001:2::/48)",
        0x2001 if (0x0010..=0x002f).contains(&s[1]) => "ORCHID (2001:10::/28, 2001:20::/28)",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignments (2001::/23)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x0000..=0x00ff => "reserved (::/8)",
        _ => return None,
    })
}

/// An address the guard refused, and why: said to the user as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    pub address: IpAddr,
    pub why: &'static str,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.why == PLAIN_HTTP {
            write!(
                f,
                "konsumer refused to connect to {}: plain http:// is only allowed to ranges given with --egress-allow; use https://",
                self.address
            )
        } else {
            write!(
                f,
                "konsumer refused to connect to {}: it is {}; an operator can allow it with --egress-allow",
                self.address, self.why
            )
        }
    }
}

impl std::error::Error for Denied {}

const PLAIN_HTTP: &str = "plain http outside --egress-allow";

/// The operator's allowlist.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub allow: Vec<IpNet>,
}

impl EgressPolicy {
    fn allowed(&self, ip: IpAddr) -> bool {
        let canonical = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.allow
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// Whether a connection to `ip` may be made; `plain_http`: only to allowed
    /// ranges.
    pub fn check(&self, ip: IpAddr, plain_http: bool) -> Result<(), Denied> {
        if self.allowed(ip) {
            return Ok(());
        }
        if let Some(why) = non_global(ip) {
            return Err(Denied { address: ip, why });
        }
        if plain_http {
            return Err(Denied {
                address: ip,
                why: PLAIN_HTTP,
            });
        }
        Ok(())
    }
}

/// Parses `--egress-allow` values (CIDRs or single addresses).
pub fn parse_allow(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_non_global_range_and_its_boundaries_is_refused() {
        let refused = [
            "0.0.0.0",
            "0.255.255.255",
            "10.0.0.0",
            "10.255.255.255",
            "100.64.0.0",
            "100.127.255.255",
            "100.100.100.200",
            "127.0.0.1",
            "127.255.255.255",
            "169.254.0.0",
            "169.254.169.254",
            "169.254.255.255",
            "172.16.0.0",
            "172.31.255.255",
            "192.0.0.0",
            "192.0.0.255",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.0",
            "192.168.255.255",
            "198.18.0.0",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.254",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "fc00::1",
            "fd00:ec2::254",
            "fdff:ffff::1",
            "ff02::1",
            "ff00::",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:10::1",
            "2001::1",
            "100::1",
            // IPv4 in IPv6 clothing
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:0001::1",
            "2002:c0a8:0101::1",
        ];
        let policy = EgressPolicy::default();
        for a in refused {
            assert!(policy.check(ip(a), false).is_err(), "{a} must be refused");
        }
        let global = [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
            "2001:4860::8888",
        ];
        for a in global {
            assert_eq!(policy.check(ip(a), false), Ok(()), "{a} is global");
        }
    }

    #[test]
    fn an_allowed_range_opens_exactly_that_range_also_for_plain_http() {
        let policy = EgressPolicy {
            allow: vec![
                parse_allow("127.0.0.0/8").unwrap(),
                parse_allow("fd00::1").unwrap(),
            ],
        };
        assert_eq!(policy.check(ip("127.0.0.1"), true), Ok(()));
        assert_eq!(policy.check(ip("::ffff:127.0.0.1"), true), Ok(()));
        assert_eq!(policy.check(ip("fd00::1"), false), Ok(()));
        assert!(policy.check(ip("fd00::2"), false).is_err());
        assert!(
            policy.check(ip("::1"), false).is_err(),
            "IPv6 loopback is not 127/8"
        );
        assert!(policy.check(ip("10.0.0.1"), true).is_err());
        let e = policy.check(ip("1.1.1.1"), true).unwrap_err();
        assert!(e.to_string().contains("plain http://"), "{e}");
        let e = EgressPolicy::default()
            .check(ip("169.254.169.254"), false)
            .unwrap_err();
        assert!(e.to_string().contains("169.254.169.254"), "{e}");
        assert!(e.to_string().contains("cloud metadata"), "{e}");
        assert!(e.to_string().starts_with("konsumer refused"), "{e}");
        assert!(parse_allow("10.0.0.0/33").is_err());
        assert!(parse_allow("nope").is_err());
    }
}
