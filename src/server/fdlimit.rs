//! File descriptors: the soft `RLIMIT_NOFILE` is raised to the hard limit at start
//! (Go programs get this from their runtime; Rust programs must ask), and the
//! listeners' connection caps are sized to what the process can open, so that a
//! full listener never starves the other one, the store or the clients of
//! descriptors.

use crate::config::ConnectionConfig;

/// Descriptors kept for everything but client connections: the store, the
/// directory watcher, Kubernetes and Prometheus clients, the runtime.
pub const RESERVED: u64 = 256;

const WEBHOOK_DEFAULT: usize = 1024;
const ADMIN_DEFAULT: usize = 64;

/// Raises the soft open-file limit to the hard one; returns the soft limit now in
/// force (`None` where the platform has no such limit).
pub fn raise() -> Option<u64> {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) if soft < hard => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => {
                tracing::debug!(from = soft, to = now, "raised the open-file limit");
                Some(now)
            }
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit; sizing connections to the current one");
                Some(soft)
            }
        },
        Ok((soft, _)) => Some(soft),
        Err(_) => None,
    }
}

/// The soft open-file limit in force.
pub fn current() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Connection caps that fit the open-file limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub webhook: usize,
    pub webhook_per_peer: usize,
    pub admin: usize,
    /// What was lowered and why, for the log.
    pub notes: Vec<String>,
}

/// Sizes the caps: the defaults shrink to fit `nofile` quietly; values given on
/// the command line that do not fit are lowered with a note saying so.
pub fn size(nofile: Option<u64>, wanted: &ConnectionConfig) -> Sizing {
    let mut notes = Vec::new();
    let budget = nofile
        .map(|n| n.saturating_sub(RESERVED).max(2))
        .unwrap_or(u64::MAX)
        .min(usize::MAX as u64) as usize;
    let admin_fit = (budget / 8).max(1);
    let admin = match wanted.admin_max {
        Some(n) if n > admin_fit => {
            notes.push(format!(
                "--admin-max-connections {n} lowered to {admin_fit}: the open-file limit is {}",
                nofile.unwrap_or_default()
            ));
            admin_fit
        }
        Some(n) => n,
        None => ADMIN_DEFAULT.min(admin_fit),
    };
    let webhook_fit = budget.saturating_sub(admin).max(1);
    let webhook = match wanted.webhook_max {
        Some(n) if n > webhook_fit => {
            notes.push(format!(
                "--max-connections {n} lowered to {webhook_fit}: the open-file limit is {} ({RESERVED} kept for konsumer's own files and clients, {admin} for the admin port); raise the limit (ulimit -n) to allow more",
                nofile.unwrap_or_default()
            ));
            webhook_fit
        }
        Some(n) => n,
        None => WEBHOOK_DEFAULT.min(webhook_fit),
    };
    let webhook_per_peer = wanted
        .webhook_max_per_peer
        .unwrap_or(webhook * 3 / 4)
        .clamp(1, webhook);
    Sizing {
        webhook,
        webhook_per_peer,
        admin,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_a_small_limit_and_keep_their_size_under_a_large_one() {
        let small = size(Some(1024), &ConnectionConfig::default());
        assert_eq!(small.admin, 64);
        assert_eq!(small.webhook, 1024 - 256 - 64);
        assert!(small.webhook + small.admin + RESERVED as usize <= 1024);
        assert!(small.notes.is_empty(), "{:?}", small.notes);
        let large = size(Some(1 << 20), &ConnectionConfig::default());
        assert_eq!((large.webhook, large.admin), (1024, 64));
        assert_eq!(large.webhook_per_peer, 768);
    }

    #[test]
    fn explicit_caps_that_do_not_fit_are_lowered_with_a_note() {
        let wanted = ConnectionConfig {
            webhook_max: Some(5000),
            admin_max: Some(10),
            webhook_max_per_peer: Some(9000),
            ..ConnectionConfig::default()
        };
        let s = size(Some(1024), &wanted);
        assert_eq!(s.admin, 10);
        assert_eq!(s.webhook, 1024 - 256 - 10);
        assert_eq!(s.webhook_per_peer, s.webhook);
        assert_eq!(s.notes.len(), 1);
        assert!(
            s.notes[0].contains("--max-connections 5000 lowered"),
            "{:?}",
            s.notes
        );
        let fits = size(Some(100_000), &wanted);
        assert_eq!(fits.webhook, 5000);
        assert!(fits.notes.is_empty());
    }

    #[test]
    fn a_tiny_limit_still_leaves_one_slot_each() {
        let s = size(Some(10), &ConnectionConfig::default());
        assert!(
            s.webhook >= 1 && s.admin >= 1 && s.webhook_per_peer >= 1,
            "{s:?}"
        );
    }
}
