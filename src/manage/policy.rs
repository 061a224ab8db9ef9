//! Whether konsumer manages a Consumer's Deployments.
//!
//! On by default for a Consumer whose `deploymentTemplate` is a complete
//! Deployment spec, as Konsumerator did: the same Consumer gives the same
//! Deployments. Two things keep that default from doubling anyone's consumers:
//! a Consumer annotated `konsumer.dev/manage-deployments: "false"` is left alone,
//! and a Consumer whose instances run as workloads konsumer did not make
//! (Deployments, StatefulSet or Job Pods labelled for it) gets no Deployment
//! written while they do, unless annotated `"true"`. The whole installation can
//! opt out with `--manage-deployments=false`.

use serde_json::Value;

use super::desired::template_problem;
use super::live;
use crate::api::{Consumer, keys};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Management {
    Managed,
    /// Not managed: a condition reason and a message for people.
    Off {
        reason: &'static str,
        message: String,
    },
}

/// The workloads labelled for a Consumer that konsumer did not make: Deployments
/// without a controller and Pods that are not a ReplicaSet's (those belong to a
/// Deployment, which is judged itself).
pub fn own_workloads(labelled: &[Value]) -> Vec<String> {
    labelled
        .iter()
        .filter(|o| match o.get("kind").and_then(Value::as_str) {
            Some("Deployment") => !live::has_controller(o),
            Some("Pod") => live::controller(o).is_none_or(|(kind, _, _)| kind != "ReplicaSet"),
            _ => false,
        })
        .map(|o| {
            format!(
                "{} {}",
                o.get("kind").and_then(Value::as_str).unwrap_or_default(),
                live::name(o)
            )
        })
        .collect()
}

/// Decides for one Consumer. `manages_some`: it already has Deployments konsumer
/// owns; `own_workloads`: what [`own_workloads`] found.
pub fn management(
    enabled: bool,
    consumer: &Consumer,
    manages_some: bool,
    own_workloads: &[String],
) -> Management {
    if !enabled {
        return Management::Off {
            reason: "Disabled",
            message: "konsumer runs with --manage-deployments=false".into(),
        };
    }
    let opt = consumer
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::MANAGE_DEPLOYMENTS))
        .map(|v| v.trim().to_ascii_lowercase());
    let forced = match opt.as_deref() {
        None => false,
        Some("true") => true,
        Some("false") => {
            return Management::Off {
                reason: "OptedOut",
                message: format!(
                    "{} is \"false\": konsumer creates, changes and deletes no Deployment of this Consumer",
                    keys::MANAGE_DEPLOYMENTS
                ),
            };
        }
        Some(other) => {
            return Management::Off {
                reason: "InvalidAnnotation",
                message: format!(
                    "{} is {other:?}; it must be \"true\" or \"false\": Deployments are left alone until it is",
                    keys::MANAGE_DEPLOYMENTS
                ),
            };
        }
    };
    let template = consumer
        .spec
        .deployment_template
        .as_ref()
        .map(|t| t.to_value());
    if let Some(problem) = template_problem(template.as_ref()) {
        return Management::Off {
            reason: "InvalidTemplate",
            message: format!("{problem}: konsumer cannot create Deployments from it"),
        };
    }
    if !forced && !own_workloads.is_empty() {
        let mut shown: Vec<&str> = own_workloads.iter().take(3).map(String::as_str).collect();
        if own_workloads.len() > 3 {
            shown.push("...");
        }
        let own = if manages_some {
            // Applied together, konsumer may have been first: it writes no more.
            " and leaves the Deployments it made as they are (delete them, or the other \
             workloads)"
        } else {
            ""
        };
        return Management::Off {
            reason: "OwnWorkloads",
            message: format!(
                "the instances run as workloads konsumer did not create ({}): konsumer \
                 creates and changes no Deployment beside them{own}; annotate the Consumer {}: \
                 \"true\" to have konsumer manage its Deployments anyway, or \"false\" to say it \
                 should not",
                shown.join(", "),
                keys::MANAGE_DEPLOYMENTS
            ),
        };
    }
    Management::Managed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn annotated(value: Option<&str>) -> Consumer {
        let mut c = crate::api::test_orders();
        if let Some(v) = value {
            c.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(keys::MANAGE_DEPLOYMENTS.into(), v.into());
        }
        c
    }

    #[test]
    fn on_by_default_off_by_flag_or_annotation() {
        assert_eq!(
            management(true, &annotated(None), false, &[]),
            Management::Managed
        );
        let off = |m: Management| match m {
            Management::Off { reason, .. } => reason,
            Management::Managed => "Managed",
        };
        assert_eq!(
            off(management(false, &annotated(None), false, &[])),
            "Disabled"
        );
        assert_eq!(
            off(management(true, &annotated(Some("false")), true, &[])),
            "OptedOut"
        );
        assert_eq!(
            off(management(true, &annotated(Some("False ")), true, &[])),
            "OptedOut"
        );
        assert_eq!(
            off(management(true, &annotated(Some("yes")), true, &[])),
            "InvalidAnnotation"
        );
        let mut bare = annotated(None);
        bare.spec.deployment_template =
            Some(json!({"template": {"spec": {"containers": [{"name": "consumer"}]}}}).into());
        assert_eq!(off(management(true, &bare, false, &[])), "InvalidTemplate");
    }

    #[test]
    fn workloads_konsumer_did_not_make_stop_it_unless_asked() {
        let labelled = vec![
            json!({"kind": "Deployment", "metadata": {"name": "orders-0"}}),
            json!({"kind": "Deployment", "metadata": {"name": "orders-1", "ownerReferences": [{"kind": "Consumer", "controller": true, "uid": "u"}]}}),
            json!({"kind": "Pod", "metadata": {"name": "orders-0-abc", "ownerReferences": [{"kind": "ReplicaSet", "controller": true}]}}),
            json!({"kind": "Pod", "metadata": {"name": "orders-2", "ownerReferences": [{"kind": "StatefulSet", "controller": true}]}}),
        ];
        let own = own_workloads(&labelled);
        assert_eq!(own, vec!["Deployment orders-0", "Pod orders-2"]);
        match management(true, &annotated(None), false, &own) {
            Management::Off { reason, message } => {
                assert_eq!(reason, "OwnWorkloads");
                assert!(
                    message.contains("Deployment orders-0, Pod orders-2"),
                    "{message}"
                );
            }
            m => panic!("{m:?}"),
        }
        match management(true, &annotated(None), true, &own) {
            Management::Off { reason, message } => {
                assert_eq!(
                    reason, "OwnWorkloads",
                    "applied together: konsumer writes no more"
                );
                assert!(
                    message.contains("leaves the Deployments it made as they are"),
                    "{message}"
                );
            }
            m => panic!("{m:?}"),
        }
        assert_eq!(
            management(true, &annotated(Some("true")), false, &own),
            Management::Managed
        );
    }
}
