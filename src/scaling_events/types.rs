//! The CloudEvents `type` vocabulary: a public contract (documented with examples
//! in the README). A type never changes meaning; a new shape gets a new version.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    ScalePending,
    Scaled,
    ScaleCancelled,
    Saturated,
    Unsaturated,
    /// A managed Deployment is rolled to the instance's recommendation.
    Applied,
    MetricsUnavailable,
    MetricsRestored,
    Resync,
    Ping,
}

impl EventType {
    pub const ALL: [EventType; 10] = [
        EventType::ScalePending,
        EventType::Scaled,
        EventType::ScaleCancelled,
        EventType::Saturated,
        EventType::Unsaturated,
        EventType::Applied,
        EventType::MetricsUnavailable,
        EventType::MetricsRestored,
        EventType::Resync,
        EventType::Ping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ScalePending => "dev.konsumer.instance.scale_pending.v1",
            EventType::Scaled => "dev.konsumer.instance.scaled.v1",
            EventType::ScaleCancelled => "dev.konsumer.instance.scale_cancelled.v1",
            EventType::Saturated => "dev.konsumer.instance.saturated.v1",
            EventType::Unsaturated => "dev.konsumer.instance.unsaturated.v1",
            EventType::Applied => "dev.konsumer.instance.applied.v1",
            EventType::MetricsUnavailable => "dev.konsumer.consumer.metrics_unavailable.v1",
            EventType::MetricsRestored => "dev.konsumer.consumer.metrics_restored.v1",
            EventType::Resync => "dev.konsumer.consumer.resync.v1",
            EventType::Ping => "dev.konsumer.subscription.ping.v1",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// A short, bounded label for metrics (`scaled`, `resync`, ...).
    pub fn label(self) -> &'static str {
        let full = self.as_str();
        let without_version = full.rsplit_once('.').map_or(full, |(head, _)| head);
        without_version
            .rsplit_once('.')
            .map_or(without_version, |(_, tail)| tail)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_and_has_a_short_label() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert!(t.as_str().starts_with("dev.konsumer."));
            assert!(t.as_str().ends_with(".v1"));
        }
        assert_eq!(EventType::Scaled.label(), "scaled");
        assert_eq!(EventType::MetricsUnavailable.label(), "metrics_unavailable");
        assert_eq!(EventType::Applied.label(), "applied");
        assert_eq!(EventType::parse("dev.konsumer.scaled"), None);
    }
}
