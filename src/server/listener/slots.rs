//! Who gets a connection slot (pure): when every slot is taken, a new connection
//! takes the slot of one that has no request in flight (an idle keep-alive
//! connection, or one still in its handshake or headers), from the peer that holds
//! the most slots, the one that has waited longest first. A peer at its own cap
//! can only displace its own connections. Busy connections are never displaced:
//! their requests are bounded by the request budget.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Phase {
    /// TLS handshake under way.
    Handshake,
    /// Accepted (and handshaken), its first request not read yet.
    AwaitingRequest,
    /// A request is being answered.
    Busy,
    /// Kept alive between requests.
    Idle,
}

impl Phase {
    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Phase::Handshake => 0,
            Phase::AwaitingRequest => 1,
            Phase::Busy => 2,
            Phase::Idle => 3,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Handshake,
            1 => Phase::AwaitingRequest,
            2 => Phase::Busy,
            _ => Phase::Idle,
        }
    }
}

/// One open connection as the decision sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub id: u64,
    pub peer: IpAddr,
    pub phase: Phase,
    /// When it entered `phase`.
    pub since: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A slot is free.
    Admit,
    /// Close this connection and take its slot.
    Evict(u64),
    /// Every slot is busy: the newcomer waits for one.
    Wait,
    /// The peer holds its whole share and every one of its connections is busy.
    Refuse,
}

/// The same address whether it arrived as IPv4 or IPv4-mapped IPv6.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn oldest_waiting<'a>(candidates: impl Iterator<Item = &'a View>) -> Option<&'a View> {
    candidates
        .filter(|v| v.phase != Phase::Busy)
        .min_by_key(|v| (v.since, v.id))
}

/// Decides the slot of a new connection from `peer`.
pub(crate) fn admit(open: &[View], peer: IpAddr, max: usize, max_per_peer: usize) -> Verdict {
    let peer = canonical(peer);
    let mine = open.iter().filter(|v| v.peer == peer).count();
    if mine >= max_per_peer.max(1) {
        return match oldest_waiting(open.iter().filter(|v| v.peer == peer)) {
            Some(v) => Verdict::Evict(v.id),
            None => Verdict::Refuse,
        };
    }
    if open.len() < max.max(1) {
        return Verdict::Admit;
    }
    let mut held: HashMap<IpAddr, usize> = HashMap::new();
    for v in open {
        *held.entry(v.peer).or_default() += 1;
    }
    let mut peers: Vec<(IpAddr, usize)> = held.into_iter().collect();
    // The biggest holder first; ties broken by address for a stable answer.
    peers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (holder, _) in peers {
        if let Some(v) = oldest_waiting(open.iter().filter(|v| v.peer == holder)) {
            return Verdict::Evict(v.id);
        }
    }
    Verdict::Wait
}

/// Whether a new connection could get a slot now (a free one or one to take).
pub(crate) fn has_room(open: &[View], max: usize) -> bool {
    open.len() < max.max(1) || open.iter().any(|v| v.phase != Phase::Busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn view(id: u64, peer: u8, phase: Phase, age_ms: u64, now: Instant) -> View {
        View {
            id,
            peer: ip(peer),
            phase,
            since: now - Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn a_free_slot_is_taken_without_displacing_anyone() {
        let now = Instant::now();
        let open = [view(1, 2, Phase::Idle, 10, now)];
        assert_eq!(admit(&open, ip(1), 2, 2), Verdict::Admit);
    }

    #[test]
    fn when_full_the_longest_waiting_connection_of_the_biggest_holder_goes() {
        let now = Instant::now();
        let open = [
            view(1, 1, Phase::Idle, 50, now),
            view(2, 2, Phase::AwaitingRequest, 10, now),
            view(3, 2, Phase::Idle, 30, now),
            view(4, 2, Phase::Busy, 90, now),
        ];
        assert_eq!(admit(&open, ip(1), 4, 4), Verdict::Evict(3));
    }

    #[test]
    fn busy_connections_are_never_displaced() {
        let now = Instant::now();
        let open = [
            view(1, 2, Phase::Busy, 50, now),
            view(2, 2, Phase::Busy, 10, now),
        ];
        assert_eq!(admit(&open, ip(1), 2, 2), Verdict::Wait);
        assert!(!has_room(&open, 2));
        let one_idle = [
            view(1, 2, Phase::Busy, 50, now),
            view(2, 3, Phase::Idle, 1, now),
        ];
        assert_eq!(admit(&one_idle, ip(1), 2, 2), Verdict::Evict(2));
        assert!(has_room(&one_idle, 2));
    }

    #[test]
    fn a_peer_at_its_share_only_displaces_its_own_connections() {
        let now = Instant::now();
        let open = [
            view(1, 1, Phase::Idle, 90, now),
            view(2, 2, Phase::Handshake, 20, now),
            view(3, 2, Phase::AwaitingRequest, 40, now),
        ];
        assert_eq!(admit(&open, ip(2), 10, 2), Verdict::Evict(3));
        let busy = [
            view(1, 1, Phase::Idle, 90, now),
            view(2, 2, Phase::Busy, 20, now),
            view(3, 2, Phase::Busy, 40, now),
        ];
        assert_eq!(admit(&busy, ip(2), 10, 2), Verdict::Refuse);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_the_same_peer() {
        let now = Instant::now();
        let open = [view(1, 1, Phase::Busy, 1, now)];
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(admit(&open, mapped, 10, 1), Verdict::Refuse);
    }
}
