//! Deciding costs tens of microseconds per instance (a Deployment built and
//! compared); a pass over an unchanged fleet should cost almost nothing. The
//! decision depends only on the Consumer (spec and status), the Deployments
//! listed and the rollout in flight: when none changed and the last decision
//! wrote nothing, it stands.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use serde_json::Value;

use super::decide::{Decision, InFlight};
use crate::api::Consumer;

/// How a listed Deployment's version is known: objects of the API server by
/// their `resourceVersion`; local mode's manifests by their file's stamp (kept
/// as numbers: 40,000 of them at 10,000 Consumers); any other object (a
/// labelled workload read from a file) by its whole text.
#[derive(Clone, Copy, Debug)]
pub enum Version<'a> {
    Resource(&'a str),
    /// Modification time (ns since the epoch) and length.
    Stamp(u64, u64),
    Whole(&'a Value),
}

impl<'a> Version<'a> {
    /// An object's `resourceVersion`, else the object itself.
    pub fn of(d: &'a Value) -> Self {
        match d
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            Some(rv) => Version::Resource(rv),
            None => Version::Whole(d),
        }
    }
}

/// What the Deployments listed for a Consumer (by name and version) and its
/// rollout in flight look like: a change of any (a write, a status, a scale)
/// changes it. Versions, not objects: a pass over an unchanged fleet reads no
/// Deployment whole.
pub fn fingerprint<'a>(
    candidates: impl IntoIterator<Item = (&'a str, Version<'a>)>,
    in_flight: Option<&InFlight>,
) -> u64 {
    let mut h = DefaultHasher::new();
    for (name, version) in candidates {
        name.hash(&mut h);
        match version {
            Version::Resource(rv) => rv.hash(&mut h),
            Version::Stamp(modified, len) => (modified, len).hash(&mut h),
            Version::Whole(d) => d.to_string().hash(&mut h),
        }
    }
    in_flight
        .map(|f| (&f.deployment, f.generation))
        .hash(&mut h);
    h.finish()
}

/// The last decision for one Consumer and what it was made from.
#[derive(Clone, Debug)]
pub struct Memo {
    /// The Consumer as cached then: the cache replaces it on any change, so the
    /// same pointer means the same object. Weak: a replaced Consumer is not kept
    /// alive by its memo (its allocation is, so no other takes its address).
    consumer: Weak<Consumer>,
    fingerprint: u64,
    decision: Decision,
}

impl Memo {
    /// A memo of `decision`, if it is one that may be reused: one that writes
    /// nothing. One that writes is made again next pass anyway, and kept it
    /// would hold every Deployment body it writes (tens of KB each) until then.
    pub fn new(consumer: &Arc<Consumer>, fingerprint: u64, decision: &Decision) -> Option<Self> {
        let quiet = decision.writes.is_empty()
            && decision.rollouts.is_empty()
            && decision.removals.is_empty();
        quiet.then(|| Memo {
            consumer: Arc::downgrade(consumer),
            fingerprint,
            decision: decision.clone(),
        })
    }

    /// The decision again, if it would be the same.
    pub fn reuse(&self, consumer: &Arc<Consumer>, fingerprint: u64) -> Option<&Decision> {
        (std::ptr::eq(self.consumer.as_ptr(), Arc::as_ptr(consumer))
            && self.fingerprint == fingerprint)
            .then_some(&self.decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp(list: &[Value], in_flight: Option<&InFlight>) -> u64 {
        fingerprint(
            list.iter()
                .map(|d| (crate::manage::live::name(d), Version::of(d))),
            in_flight,
        )
    }

    #[test]
    fn any_change_of_the_inputs_decides_again() {
        let c = Arc::new(crate::api::test_orders());
        let d = vec![json!({"metadata": {"name": "orders-0", "resourceVersion": "7"}})];
        let f = fp(&d, None);
        let memo = Memo::new(&c, f, &Decision::default()).unwrap();
        assert!(memo.reuse(&c, f).is_some());
        assert!(
            memo.reuse(&Arc::new((*c).clone()), f).is_none(),
            "another object"
        );
        let moved = vec![json!({"metadata": {"name": "orders-0", "resourceVersion": "8"}})];
        assert_ne!(fp(&moved, None), f);
        let flight = InFlight {
            deployment: "orders-0".into(),
            generation: 2,
        };
        assert_ne!(fp(&d, Some(&flight)), f);
        let local = vec![json!({"metadata": {"name": "orders-0"}, "spec": {"replicas": 1}})];
        let edited = vec![json!({"metadata": {"name": "orders-0"}, "spec": {"replicas": 0}})];
        assert_ne!(fp(&local, None), fp(&edited, None));
    }

    #[test]
    fn a_decision_that_writes_is_never_kept_nor_reused() {
        let c = Arc::new(crate::api::test_orders());
        let busy = Decision {
            removals: vec![crate::manage::Removal {
                name: "orders-9".into(),
                why: "extra".into(),
            }],
            ..Decision::default()
        };
        assert!(Memo::new(&c, 1, &busy).is_none());
    }
}
