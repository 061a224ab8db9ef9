//! Which Consumers a subscription sees (pure): tenancy and label selectors. A
//! subscription sees the Consumers of its own namespace that its
//! `consumerSelector` matches; one in konsumer's own namespace may add
//! `namespaceSelector` to follow other namespaces (the platform team's feed).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::ScalingSubscription;

/// Whether `selector` matches `labels` (Kubernetes semantics: requirements
/// ANDed; an empty or absent selector matches everything). A malformed
/// requirement (validation refuses those) matches nothing.
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = selector else { return true };
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    by_label
        && sel.match_expressions.iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            let value = labels.get(&r.key);
            match r.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

/// What a subscription may see of a Consumer in `namespace` with `labels`;
/// `namespace_labels` are the labels of that namespace (when known).
pub fn sees(
    sub: &ScalingSubscription,
    konsumer_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let own = sub.metadata.namespace.as_deref().unwrap_or("default");
    let in_scope = if namespace == own {
        true
    } else {
        match (&sub.spec.namespace_selector, own == konsumer_namespace) {
            (Some(ns_sel), true) => {
                namespace_labels.is_some_and(|l| matches(Some(ns_sel), &with_name(l, namespace)))
            }
            _ => false,
        }
    };
    in_scope && matches(sub.spec.consumer_selector.as_ref(), labels)
}

/// Namespace labels plus `kubernetes.io/metadata.name`, which the apiserver sets.
fn with_name(labels: &BTreeMap<String, String>, namespace: &str) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| namespace.to_string());
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(
        ns: &str,
        consumer: Option<LabelSelector>,
        namespaces: Option<LabelSelector>,
    ) -> ScalingSubscription {
        let mut s = ScalingSubscription::new("feed", Default::default());
        s.metadata.namespace = Some(ns.into());
        s.spec.consumer_selector = consumer;
        s.spec.namespace_selector = namespaces;
        s
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("team", "payments")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["gold".into(), "silver".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(matches(
            Some(&sel),
            &labels(&[("team", "payments"), ("tier", "gold")])
        ));
        assert!(!matches(
            Some(&sel),
            &labels(&[("team", "payments"), ("tier", "bronze")])
        ));
        assert!(!matches(
            Some(&sel),
            &labels(&[("team", "payments"), ("tier", "gold"), ("legacy", "")])
        ));
        assert!(matches(None, &labels(&[])));
        assert!(matches(Some(&LabelSelector::default()), &labels(&[])));
    }

    #[test]
    fn a_subscription_sees_its_own_namespace_and_only_konsumers_may_follow_others() {
        let all = Some(LabelSelector::default());
        let tenant = sub("streams", None, all.clone());
        assert!(sees(
            &tenant,
            "konsumer-system",
            "streams",
            &labels(&[]),
            None
        ));
        assert!(
            !sees(
                &tenant,
                "konsumer-system",
                "billing",
                &labels(&[]),
                Some(&labels(&[]))
            ),
            "a tenant's namespaceSelector is ignored"
        );
        let platform = sub(
            "konsumer-system",
            None,
            Some(LabelSelector {
                match_labels: Some(labels(&[("kubernetes.io/metadata.name", "billing")])),
                match_expressions: None,
            }),
        );
        assert!(sees(
            &platform,
            "konsumer-system",
            "billing",
            &labels(&[]),
            Some(&labels(&[]))
        ));
        assert!(!sees(
            &platform,
            "konsumer-system",
            "streams",
            &labels(&[]),
            Some(&labels(&[]))
        ));
        assert!(
            !sees(&platform, "konsumer-system", "billing", &labels(&[]), None),
            "unknown namespace"
        );
        let plain = sub("konsumer-system", None, None);
        assert!(!sees(
            &plain,
            "konsumer-system",
            "billing",
            &labels(&[]),
            Some(&labels(&[]))
        ));
    }
}
