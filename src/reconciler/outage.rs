//! Prometheus failures as outages (pure): the Consumers that fail the same way
//! (the same error, addresses included) share one outage, which is worth a line
//! when it starts, one when it ends and a periodic summary while it lasts; not a
//! line per Consumer per attempt (10,000 Consumers behind one Prometheus that is
//! down made 10,000 identical warnings a minute).
//!
//! It also knows which Prometheus addresses are down (the last read of them
//! failed at the transport level): while one is, a Consumer behind it that already
//! failed is not read again until one probe per `minSyncPeriod`, made by any
//! Consumer behind it, gets an answer (10,000 Consumers behind one address that is
//! down made 10,000 reads a minute, each reconciling its Consumer in full).

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};

/// How often a lasting outage is summarized.
pub const SUMMARY_EVERY: SignedDuration = SignedDuration::from_mins(5);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The first Consumer failed this way.
    Started { error: String, consumer: String },
    /// No Consumer fails this way any more.
    Ended {
        error: String,
        since: Timestamp,
        /// Consumers that failed this way while it lasted.
        affected: usize,
    },
    /// Still failing: how many Consumers now, since when.
    Ongoing {
        error: String,
        since: Timestamp,
        consumers: usize,
    },
}

#[derive(Debug)]
struct Outage {
    since: Timestamp,
    consumers: usize,
    affected: usize,
}

/// The outages under way and which one each failing Consumer is in.
#[derive(Debug, Default)]
pub struct Outages {
    open: HashMap<String, Outage>,
    by_consumer: HashMap<String, String>,
    last_summary: Option<Timestamp>,
    /// Addresses (a Consumer's list, as configured) whose last read failed at
    /// the transport level, with the time of that read (the last probe).
    down: HashMap<Vec<String>, Timestamp>,
    /// Down addresses that answered again, counted: whoever waited on a probe
    /// waits no more once this moved.
    answered: u64,
}

impl Outages {
    /// `consumer`'s read failed with `error`.
    pub fn failed(&mut self, consumer: &str, error: &str, now: Timestamp) -> Vec<Notice> {
        if self.by_consumer.get(consumer).map(String::as_str) == Some(error) {
            return Vec::new();
        }
        let mut notices: Vec<Notice> = self.leave(consumer).into_iter().collect();
        self.by_consumer
            .insert(consumer.to_string(), error.to_string());
        let outage = self.open.entry(error.to_string()).or_insert_with(|| {
            notices.push(Notice::Started {
                error: error.to_string(),
                consumer: consumer.to_string(),
            });
            Outage {
                since: now,
                consumers: 0,
                affected: 0,
            }
        });
        outage.consumers += 1;
        outage.affected += 1;
        notices
    }

    /// `consumer`'s read succeeded (or it is gone).
    pub fn recovered(&mut self, consumer: &str) -> Option<Notice> {
        self.leave(consumer)
    }

    fn leave(&mut self, consumer: &str) -> Option<Notice> {
        let error = self.by_consumer.remove(consumer)?;
        let outage = self.open.get_mut(&error)?;
        outage.consumers -= 1;
        if outage.consumers > 0 {
            return None;
        }
        let outage = self.open.remove(&error)?;
        Some(Notice::Ended {
            error,
            since: outage.since,
            affected: outage.affected,
        })
    }

    /// One notice per outage under way, at most every [`SUMMARY_EVERY`].
    pub fn summary(&mut self, now: Timestamp) -> Vec<Notice> {
        if self.open.is_empty() {
            self.last_summary = None;
            return Vec::new();
        }
        let due = self
            .last_summary
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_EVERY);
        if !due {
            return Vec::new();
        }
        // The first summary comes one period after the outage began.
        if self.last_summary.is_none() {
            self.last_summary = Some(now);
            return Vec::new();
        }
        self.last_summary = Some(now);
        let mut notices: Vec<Notice> = self
            .open
            .iter()
            .map(|(error, o)| Notice::Ongoing {
                error: error.clone(),
                since: o.since,
                consumers: o.consumers,
            })
            .collect();
        notices.sort_by_key(|n| match n {
            Notice::Ongoing { since, .. } => *since,
            _ => Timestamp::UNIX_EPOCH,
        });
        notices
    }

    /// Consumers whose last read failed.
    pub fn failing(&self) -> usize {
        self.by_consumer.len()
    }

    /// Until when `consumer`, behind `addresses`, leaves its reads to the probe
    /// of those addresses: while they are down and its own last read failed
    /// (one that has not failed yet reads for itself, and its status says so).
    pub fn waits(
        &self,
        consumer: &str,
        addresses: &[String],
        period: SignedDuration,
    ) -> Option<Timestamp> {
        let probed = self.down.get(addresses)?;
        if !self.by_consumer.contains_key(consumer) {
            return None;
        }
        Some(probed.checked_add(period).unwrap_or(Timestamp::MAX))
    }

    /// Whether `consumer` may read `addresses` now: always, unless they are
    /// down and it waits on their probe; when they are down, this read is the
    /// probe, and the others wait a `period` from now.
    pub fn claim(
        &mut self,
        consumer: &str,
        addresses: &[String],
        period: SignedDuration,
        now: Timestamp,
    ) -> bool {
        if self
            .waits(consumer, addresses, period)
            .is_some_and(|until| now < until)
        {
            return false;
        }
        if let Some(probed) = self.down.get_mut(addresses) {
            *probed = now;
        }
        true
    }

    /// What a read of `addresses` at `now` found: `unreachable` (no answer at
    /// the transport level) marks them down; any answer, even an error of one
    /// Consumer's query, ends that.
    pub fn answered(&mut self, addresses: &[String], unreachable: bool, now: Timestamp) {
        if unreachable {
            match self.down.get_mut(addresses) {
                Some(probed) => *probed = now,
                None => {
                    self.down.insert(addresses.to_vec(), now);
                }
            }
        } else if self.down.remove(addresses).is_some() {
            self.answered += 1;
        }
    }

    /// How many times a down address answered again (see [`Self::answered`]).
    pub fn answers(&self) -> u64 {
        self.answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mins: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_mins(mins)
    }

    #[test]
    fn many_consumers_failing_alike_start_and_end_one_outage() {
        let mut o = Outages::default();
        let down = "http://prom:9090: connection refused";
        let first = o.failed("ns/a", down, at(0));
        assert_eq!(
            first,
            vec![Notice::Started {
                error: down.into(),
                consumer: "ns/a".into()
            }]
        );
        for i in 0..9_999 {
            assert!(o.failed(&format!("ns/c{i}"), down, at(0)).is_empty());
        }
        // The same failure again, next attempt: nothing new.
        assert!(o.failed("ns/a", down, at(1)).is_empty());
        assert_eq!(o.failing(), 10_000);
        assert_eq!(o.recovered("ns/a"), None);
        for i in 0..9_998 {
            assert_eq!(o.recovered(&format!("ns/c{i}")), None);
        }
        assert_eq!(
            o.recovered("ns/c9998"),
            Some(Notice::Ended {
                error: down.into(),
                since: at(0),
                affected: 10_000
            })
        );
        assert_eq!(o.failing(), 0);
        assert_eq!(o.recovered("ns/never-failed"), None);
    }

    #[test]
    fn a_consumer_failing_differently_moves_to_the_other_outage() {
        let mut o = Outages::default();
        o.failed("ns/a", "refused", at(0));
        let moved = o.failed("ns/a", "timeout", at(1));
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(matches!(&moved[0], Notice::Ended { error, .. } if error == "refused"));
        assert!(matches!(&moved[1], Notice::Started { error, .. } if error == "timeout"));
    }

    #[test]
    fn a_lasting_outage_is_summarized_every_period_and_not_in_between() {
        let mut o = Outages::default();
        assert!(o.summary(at(0)).is_empty());
        o.failed("ns/a", "refused", at(0));
        o.failed("ns/b", "refused", at(0));
        assert!(o.summary(at(0)).is_empty(), "the start was just logged");
        assert!(o.summary(at(4)).is_empty());
        assert_eq!(
            o.summary(at(5)),
            vec![Notice::Ongoing {
                error: "refused".into(),
                since: at(0),
                consumers: 2
            }]
        );
        assert!(o.summary(at(7)).is_empty());
        assert_eq!(o.summary(at(10)).len(), 1);
        o.recovered("ns/a");
        o.recovered("ns/b");
        assert!(o.summary(at(15)).is_empty());
    }

    #[test]
    fn behind_a_down_address_one_probe_a_period_stands_for_the_consumers_that_failed() {
        let mut o = Outages::default();
        let a = vec!["http://prom:9090".to_string()];
        let period = SignedDuration::from_mins(1);
        for c in ["ns/a", "ns/b"] {
            assert!(o.claim(c, &a, period, at(0)));
            o.answered(&a, true, at(0));
            o.failed(c, "refused", at(0));
        }
        // One that has not failed yet reads for itself.
        assert_eq!(o.waits("ns/new", &a, period), None);
        assert!(o.claim("ns/new", &a, period, at(0)));
        assert_eq!(o.waits("ns/b", &a, period), Some(at(1)));
        assert!(!o.claim("ns/b", &a, period, at(0)));
        // A period later the first to come probes; the other waits a period more.
        assert!(o.claim("ns/b", &a, period, at(1)));
        assert!(!o.claim("ns/a", &a, period, at(1)));
        assert_eq!(o.waits("ns/a", &a, period), Some(at(2)));
        o.answered(&a, true, at(1));
        // Other addresses are not concerned.
        assert_eq!(o.waits("ns/a", &["http://other:9090".into()], period), None);
        // Any answer ends it: nobody waits any more, and that is counted.
        let answers = o.answers();
        o.answered(&a, false, at(2));
        assert_eq!(o.answers(), answers + 1);
        assert_eq!(o.waits("ns/a", &a, period), None);
        assert!(o.claim("ns/a", &a, period, at(2)));
    }
}
