//! What the Deployment manager adds to a Consumer's status: the rollouts it
//! would make count as `outdated`, and the `DeploymentsManaged` condition says
//! whether konsumer manages the Deployments and what it leaves alone.

use jiff::Timestamp;

use super::decide::Decision;
use super::policy::Management;
use crate::api::ConsumerStatus;
use crate::scaling::status::set_condition;

pub const DEPLOYMENTS_MANAGED: &str = "DeploymentsManaged";

/// How many Deployments left alone the condition names.
const SHOWN_KEPT: usize = 5;

/// The condition's (status, reason, message).
pub fn condition(management: &Management, decision: Option<&Decision>) -> (bool, String, String) {
    match management {
        Management::Off { reason, message } => (false, reason.to_string(), message.clone()),
        Management::Managed => {
            let mut parts = Vec::new();
            if let Some(d) = decision {
                let mut kept: Vec<String> = d.kept.iter().map(|k| k.describe()).collect();
                kept.sort();
                // Bounded: the condition is for people, and the status for etcd.
                let more = kept.len().saturating_sub(SHOWN_KEPT);
                parts.extend(kept.into_iter().take(SHOWN_KEPT));
                if more > 0 {
                    parts.push(format!("and {more} more left alone"));
                }
                if !d.rollouts.is_empty() {
                    parts.push(format!("{} to roll out, one at a time", d.rollouts.len()));
                }
            }
            let message = if parts.is_empty() {
                "konsumer creates, rolls and removes this Consumer's Deployments".to_string()
            } else {
                parts.join("; ")
            };
            (true, "Managed".into(), message)
        }
    }
}

/// Folds the manager's view into the status the scaling step produced
/// (`next`, `None` when it changed nothing). `outdated`: the Deployments the
/// webhook would change, as counted (`None` when the workloads are unknown
/// this pass). Returns the status to write, `None` when it equals `previous`.
pub fn fold(
    previous: &ConsumerStatus,
    next: Option<ConsumerStatus>,
    management: &Management,
    decision: Option<&Decision>,
    counted_outdated: Option<i32>,
    generation: Option<i64>,
    now: Timestamp,
) -> Option<ConsumerStatus> {
    let mut status = next.clone().unwrap_or_else(|| previous.clone());
    if let (Some(counted), Some(d)) = (counted_outdated, decision) {
        status.outdated = Some(counted + d.rollouts.len() as i32);
    }
    let (ok, reason, message) = condition(management, decision);
    let mut conditions = status.conditions.take().unwrap_or_default();
    set_condition(
        &mut conditions,
        DEPLOYMENTS_MANAGED,
        ok,
        &reason,
        message,
        generation,
        now,
    );
    status.conditions = Some(conditions);
    (status != *previous).then_some(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manage::Kept;

    fn now() -> Timestamp {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn pending_rollouts_count_as_outdated_and_an_unchanged_view_writes_nothing() {
        let rollout = crate::manage::Write {
            name: "orders-1".into(),
            instance: 1,
            partitions: vec![3, 4, 5],
            change: crate::manage::Change::Rollout,
            body: serde_json::Value::Null,
            changes: Vec::new(),
            from: Vec::new(),
            to: Vec::new(),
        };
        let decision = Decision {
            rollouts: vec![rollout],
            ..Decision::default()
        };
        let first = fold(
            &ConsumerStatus::default(),
            None,
            &Management::Managed,
            Some(&decision),
            Some(0),
            Some(1),
            now(),
        )
        .unwrap();
        assert_eq!(first.outdated, Some(1), "one rollout waits");
        let c = &first.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str()),
            (DEPLOYMENTS_MANAGED, "True")
        );
        assert!(c.message.contains("1 to roll out"), "{}", c.message);
        // The next pass: the scaling step changed nothing, the view is the same
        // (the status it starts from already counts the rollout).
        assert_eq!(
            fold(
                &first,
                None,
                &Management::Managed,
                Some(&decision),
                Some(0),
                Some(1),
                now()
            ),
            None
        );
        let done = fold(
            &first,
            None,
            &Management::Managed,
            Some(&Decision::default()),
            Some(0),
            Some(1),
            now(),
        )
        .unwrap();
        assert_eq!(done.outdated, Some(0));
    }

    #[test]
    fn what_is_left_alone_and_why_management_is_off_are_in_the_condition() {
        let d = Decision {
            kept: vec![Kept::Paused {
                name: "orders-1".into(),
                why: "konsumerator.lwolf.org/disable-autoscaler".into(),
            }],
            ..Decision::default()
        };
        let (ok, _, message) = condition(&Management::Managed, Some(&d));
        assert!(ok);
        assert!(message.contains("orders-1 is paused"), "{message}");
        let off = Management::Off {
            reason: "OptedOut",
            message: "opted out".into(),
        };
        assert_eq!(
            condition(&off, None),
            (false, "OptedOut".into(), "opted out".into())
        );
    }
}
