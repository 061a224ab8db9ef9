//! Prometheus failures as outages (pure): the Consumers that fail the same way
//! (the same error, addresses included) share one outage, which is worth a line
//! when it starts, one when it ends and a periodic summary while it lasts; not a
//! line per Consumer per attempt (10,000 Consumers behind one Prometheus that is
//! down made 10,000 identical warnings a minute).

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
}
