//! What konsumer tells people in Kubernetes Events (pure): a reason, and a note
//! written as a sentence, never a `Debug` dump or `SATURATED -> SATURATED`.
//! (Scaling events delivered to subscribers are another thing, with their own
//! module.)

use crate::api::{ConsumerStatus, ContainerResources};
use crate::manage::{Applied, Change, Kept};
use crate::scaling::Transition;
use crate::scaling::machine::{Direction, Event};
use crate::scaling::status::METRICS_AVAILABLE;

/// One Kubernetes Event on a Consumer (or its guest-mode ConfigMap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub warning: bool,
    /// `CamelCase`, what happened.
    pub reason: String,
    /// What konsumer did (the Event's `action`).
    pub action: String,
    pub note: String,
    /// The instance it is about: events of different instances are different
    /// events (not one series showing the first instance's note).
    pub instance: Option<u32>,
    /// The managed Deployment it is about (the Event's `related` object).
    pub deployment: Option<String>,
}

impl Notice {
    fn normal(reason: &str, action: &str, note: String) -> Self {
        Notice {
            warning: false,
            reason: reason.into(),
            action: action.into(),
            note,
            instance: None,
            deployment: None,
        }
    }

    fn about(mut self, instance: Option<u32>, deployment: Option<&str>) -> Self {
        self.instance = instance;
        self.deployment = deployment.map(String::from);
        self
    }

    fn warning(reason: &str, action: &str, note: String) -> Self {
        Notice {
            warning: true,
            ..Notice::normal(reason, action, note)
        }
    }
}

fn instance(id: u32, partitions: &[u32]) -> String {
    let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
    let word = if partitions.len() == 1 {
        "partition"
    } else {
        "partitions"
    };
    format!("instance {id} ({word} {})", list.join(","))
}

/// `consumer cpu 100m → 1300m, memory 128Mi → 1Gi; log-shipper unchanged`.
pub fn resource_change(before: &[ContainerResources], after: &[ContainerResources]) -> String {
    let parts: Vec<String> = after
        .iter()
        .map(|c| {
            let old = before.iter().find(|b| b.container_name == c.container_name);
            let mut changes = Vec::new();
            for key in ["cpu", "memory"] {
                let new = c.requests.get(key).map(|q| q.0.as_str());
                let was = old.and_then(|o| o.requests.get(key)).map(|q| q.0.as_str());
                match (was, new) {
                    (Some(a), Some(b)) if a != b => changes.push(format!("{key} {a} → {b}")),
                    (None, Some(b)) => changes.push(format!("{key} {b}")),
                    _ => {}
                }
            }
            if changes.is_empty() {
                format!("{} unchanged", c.container_name)
            } else {
                format!("{} {}", c.container_name, changes.join(", "))
            }
        })
        .collect();
    parts.join("; ")
}

/// A scaling transition, for people.
pub fn transition(t: &Transition) -> Notice {
    let who = instance(t.instance, &t.partitions);
    let (reason, warning, note) = match t.event {
        Event::ScalePending(d) => (
            t.event.name(),
            false,
            format!(
                "{who} will scale {} after its pending period unless this changes: {}",
                direction(d),
                t.reason
            ),
        ),
        Event::Scaled(d) => {
            let to = resource_change(&t.previous, &t.new);
            let to = if to.is_empty() {
                String::new()
            } else {
                format!(" to {to}")
            };
            (
                t.event.name(),
                false,
                format!("{who} scaled {}{to}: {}", direction(d), t.reason),
            )
        }
        Event::ScaleCancelled(d) => (
            t.event.name(),
            false,
            format!(
                "{who}: the scale-{} was cancelled: {}",
                direction(d),
                t.reason
            ),
        ),
        Event::Saturated => (
            t.event.name(),
            true,
            format!("{who} is saturated: {}", t.reason),
        ),
        Event::Unsaturated => (
            t.event.name(),
            false,
            format!("{who} is no longer saturated: {}", t.reason),
        ),
    };
    Notice {
        warning,
        ..Notice::normal(reason, "Scale", note)
    }
    .about(Some(t.instance), None)
}

fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Up => "up",
        Direction::Down => "down",
    }
}

/// Reasons of `MetricsAvailable=False` that mean the metrics stopped flowing
/// (not "this Consumer is not autoscaled").
const UNAVAILABLE: [&str; 2] = ["PrometheusUnavailable", "NoData"];

fn metrics_state(status: Option<&ConsumerStatus>) -> Option<(bool, String, String)> {
    let c = status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == METRICS_AVAILABLE)?;
    let down = c.status == "False" && UNAVAILABLE.contains(&c.reason.as_str());
    Some((down, c.reason.clone(), c.message.clone()))
}

/// A Warning when metrics stop flowing (once, when it starts), a Normal event
/// when they flow again.
pub fn metrics_change(
    previous: Option<&ConsumerStatus>,
    next: Option<&ConsumerStatus>,
) -> Option<Notice> {
    let was_down = metrics_state(previous).is_some_and(|(down, _, _)| down);
    let (down, reason, message) = metrics_state(next)?;
    match (was_down, down) {
        (false, true) => Some(Notice::warning(
            "MetricsUnavailable",
            "ReadMetrics",
            format!(
                "konsumer cannot read this Consumer's metrics ({reason}: {message}); \
                 recommendations stay as they are until metrics flow again"
            ),
        )),
        (true, false) if reason == "MetricsRead" => Some(Notice::normal(
            "MetricsAvailable",
            "ReadMetrics",
            format!("metrics flow again: {message}"),
        )),
        _ => None,
    }
}

/// A write konsumer made to a managed Deployment.
pub fn applied(a: &Applied) -> Notice {
    let who = instance(a.instance, &a.partitions);
    let n = match a.change {
        Change::Create => Notice::normal(
            "DeploymentCreated",
            "Create",
            format!(
                "created Deployment {} for {who} with {}",
                a.deployment,
                resource_change(&[], &a.new)
            ),
        ),
        Change::Rollout => {
            let mut note = format!("rolled Deployment {} of {who}", a.deployment);
            if a.previous != a.new {
                note.push_str(&format!(" to {}", resource_change(&a.previous, &a.new)));
            }
            if !a.changes.is_empty() {
                note.push_str(&format!("; changed {}", a.changes.join(", ")));
            }
            Notice::normal("DeploymentRolled", "Rollout", note)
        }
        Change::Metadata => Notice::normal(
            "DeploymentAdopted",
            "Update",
            format!(
                "updated the labels, annotations or owner of Deployment {} of {who} (no restart): {}",
                a.deployment,
                a.changes.join(", ")
            ),
        ),
    };
    n.about(Some(a.instance), Some(&a.deployment))
}

pub fn removed(deployment: &str, why: &str) -> Notice {
    Notice::normal(
        "DeploymentDeleted",
        "Delete",
        format!("deleted Deployment {deployment}: {why}"),
    )
    .about(None, Some(deployment))
}

/// A write that failed (it is retried on the next pass).
pub fn write_failed(deployment: &str, what: &str, error: &str) -> Notice {
    Notice::warning(
        "DeploymentWriteFailed",
        what,
        format!(
            "konsumer could not {} Deployment {deployment}: {error}; it tries again on its next pass",
            what.to_ascii_lowercase()
        ),
    )
    .about(None, Some(deployment))
}

/// A Deployment konsumer leaves alone that people should know about.
pub fn kept(k: &Kept) -> Option<Notice> {
    match k {
        Kept::Foreign { name, .. } => Some(
            Notice::warning("DeploymentNotOwned", "Create", k.describe()).about(None, Some(name)),
        ),
        Kept::Stalled { name, .. } => {
            Some(Notice::warning("RolloutStalled", "Rollout", k.describe()).about(None, Some(name)))
        }
        Kept::Paused { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use crate::api::ScalingState;

    fn resources(name: &str, cpu: &str, memory: &str) -> ContainerResources {
        let list: crate::api::ResourceList = [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ]
        .into();
        ContainerResources {
            container_name: name.into(),
            requests: list.clone(),
            limits: list,
        }
    }

    fn transition(event: Event, from: ScalingState, to: ScalingState) -> Transition {
        Transition {
            instance: 1,
            partitions: vec![3, 4, 5],
            event,
            from,
            to,
            previous: vec![resources("consumer", "100m", "128Mi")],
            new: vec![resources("consumer", "1300m", "1Gi")],
            reason: "lagging with 400m CPU cut off by the caps (wanted 2400m)".into(),
            observation: None,
            at: "2026-11-22T12:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn a_saturation_reads_as_a_sentence_not_a_state_pair() {
        let n = super::transition(&transition(
            Event::Saturated,
            ScalingState::Saturated,
            ScalingState::Saturated,
        ));
        assert!(n.warning);
        assert_eq!(n.reason, "Saturated");
        assert_eq!(
            n.note,
            "instance 1 (partitions 3,4,5) is saturated: lagging with 400m CPU cut off by the caps (wanted 2400m)"
        );
        assert!(!n.note.contains("->") && !n.note.contains("SATURATED"));
    }

    #[test]
    fn a_scale_says_what_changed() {
        let n = super::transition(&transition(
            Event::Scaled(Direction::Up),
            ScalingState::PendingScaleUp,
            ScalingState::Running,
        ));
        assert!(!n.warning);
        assert!(
            n.note.starts_with(
                "instance 1 (partitions 3,4,5) scaled up to consumer cpu 100m → 1300m, memory 128Mi → 1Gi: "
            ),
            "{}",
            n.note
        );
    }

    fn status(available: Option<(&str, &str)>) -> ConsumerStatus {
        ConsumerStatus {
            conditions: available.map(|(s, reason)| {
                vec![Condition {
                    type_: METRICS_AVAILABLE.into(),
                    status: s.into(),
                    reason: reason.into(),
                    message: "connection refused".into(),
                    observed_generation: None,
                    last_transition_time: Time("2026-11-22T12:00:00Z".parse().unwrap()),
                }]
                .into()
            }),
            ..ConsumerStatus::default()
        }
    }

    #[test]
    fn metrics_going_away_is_a_warning_once_and_coming_back_a_normal_event() {
        let up = status(Some(("True", "MetricsRead")));
        let down = status(Some(("False", "PrometheusUnavailable")));
        let no_data = status(Some(("False", "NoData")));
        let not_scaled = status(Some(("False", "NotAutoscaled")));
        let n = metrics_change(Some(&up), Some(&down)).unwrap();
        assert!(n.warning);
        assert_eq!(n.reason, "MetricsUnavailable");
        assert!(
            n.note.contains("PrometheusUnavailable: connection refused"),
            "{}",
            n.note
        );
        assert!(
            metrics_change(None, Some(&down)).is_some(),
            "unavailable from the start"
        );
        assert_eq!(
            metrics_change(Some(&down), Some(&no_data)),
            None,
            "still unavailable"
        );
        assert_eq!(metrics_change(Some(&down), Some(&down)), None);
        assert_eq!(metrics_change(Some(&up), Some(&not_scaled)), None);
        let back = metrics_change(Some(&no_data), Some(&up)).unwrap();
        assert!(!back.warning);
        assert_eq!(
            metrics_change(Some(&up), None),
            None,
            "no new status: nothing changed"
        );
    }
}
