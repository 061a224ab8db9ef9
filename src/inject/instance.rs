//! Which instance of its Consumer a workload is. First match wins:
//! 1. label or annotation `konsumerator.lwolf.org/instance`
//! 2. annotation `konsumerator.lwolf.org/consumer-id` (Konsumerator's)
//! 3. label `apps.kubernetes.io/pod-index` (StatefulSet pods)
//! 4. annotation `batch.kubernetes.io/job-completion-index` (Indexed Job pods)
//! 5. Deployment name `<spec.name>-<n>` (Konsumerator's naming)

use std::fmt;

use crate::api::keys;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    InstanceLabel,
    InstanceAnnotation,
    ConsumerIdAnnotation,
    PodIndexLabel,
    JobCompletionIndexAnnotation,
    DeploymentName,
}

impl Source {
    /// The field a user would edit, apiserver style.
    pub fn field(self) -> String {
        match self {
            Source::InstanceLabel => format!("metadata.labels[{}]", keys::INSTANCE),
            Source::InstanceAnnotation => format!("metadata.annotations[{}]", keys::INSTANCE),
            Source::ConsumerIdAnnotation => format!("metadata.annotations[{}]", keys::CONSUMER_ID),
            Source::PodIndexLabel => format!("metadata.labels[{}]", keys::POD_INDEX),
            Source::JobCompletionIndexAnnotation => {
                format!("metadata.annotations[{}]", keys::JOB_COMPLETION_INDEX)
            }
            Source::DeploymentName => "metadata.name".to_string(),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.field())
    }
}

/// What the lookup reads from the object.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hints<'a> {
    pub instance_label: Option<&'a str>,
    pub instance_annotation: Option<&'a str>,
    pub consumer_id_annotation: Option<&'a str>,
    pub pod_index_label: Option<&'a str>,
    pub job_completion_index_annotation: Option<&'a str>,
    /// `metadata.name` of a Deployment (rule 5 applies to Deployments only).
    pub deployment_name: Option<&'a str>,
}

impl<'a> Hints<'a> {
    /// Each hint from `self`, else from `other`.
    pub fn or(self, other: Hints<'a>) -> Hints<'a> {
        Hints {
            instance_label: self.instance_label.or(other.instance_label),
            instance_annotation: self.instance_annotation.or(other.instance_annotation),
            consumer_id_annotation: self.consumer_id_annotation.or(other.consumer_id_annotation),
            pod_index_label: self.pod_index_label.or(other.pod_index_label),
            job_completion_index_annotation: self
                .job_completion_index_annotation
                .or(other.job_completion_index_annotation),
            deployment_name: self.deployment_name.or(other.deployment_name),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceError {
    /// A rule matched but its value is not an ordinal.
    NotANumber { source: Source, value: String },
    /// No rule matched.
    Unknown,
}

/// Finds the instance ordinal; `base_name` is the Consumer's `spec.name`.
pub fn find(hints: &Hints<'_>, base_name: &str) -> Result<(u32, Source), InstanceError> {
    let explicit = [
        (hints.instance_label, Source::InstanceLabel),
        (hints.instance_annotation, Source::InstanceAnnotation),
        (hints.consumer_id_annotation, Source::ConsumerIdAnnotation),
        (hints.pod_index_label, Source::PodIndexLabel),
        (
            hints.job_completion_index_annotation,
            Source::JobCompletionIndexAnnotation,
        ),
    ];
    for (value, source) in explicit {
        if let Some(value) = value {
            return parse_ordinal(value).map(|n| (n, source)).ok_or_else(|| {
                InstanceError::NotANumber {
                    source,
                    value: value.to_string(),
                }
            });
        }
    }
    if let Some(n) = hints
        .deployment_name
        .and_then(|name| name.strip_prefix(base_name))
        .and_then(|rest| rest.strip_prefix('-'))
        .and_then(parse_ordinal)
    {
        return Ok((n, Source::DeploymentName));
    }
    Err(InstanceError::Unknown)
}

/// A non-negative decimal without sign or leading zeros (`0`, `12`).
fn parse_ordinal(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order() {
        let all = Hints {
            instance_label: Some("0"),
            instance_annotation: Some("1"),
            consumer_id_annotation: Some("2"),
            pod_index_label: Some("3"),
            job_completion_index_annotation: Some("4"),
            deployment_name: Some("orders-5"),
        };
        assert_eq!(find(&all, "orders"), Ok((0, Source::InstanceLabel)));
        let h = Hints {
            instance_label: None,
            ..all
        };
        assert_eq!(find(&h, "orders"), Ok((1, Source::InstanceAnnotation)));
        let h = Hints {
            instance_annotation: None,
            ..h
        };
        assert_eq!(find(&h, "orders"), Ok((2, Source::ConsumerIdAnnotation)));
        let h = Hints {
            consumer_id_annotation: None,
            ..h
        };
        assert_eq!(find(&h, "orders"), Ok((3, Source::PodIndexLabel)));
        let h = Hints {
            pod_index_label: None,
            ..h
        };
        assert_eq!(
            find(&h, "orders"),
            Ok((4, Source::JobCompletionIndexAnnotation))
        );
        let h = Hints {
            job_completion_index_annotation: None,
            ..h
        };
        assert_eq!(find(&h, "orders"), Ok((5, Source::DeploymentName)));
        let h = Hints {
            deployment_name: None,
            ..h
        };
        assert_eq!(find(&h, "orders"), Err(InstanceError::Unknown));
    }

    #[test]
    fn a_matching_rule_with_a_bad_value_is_an_error_not_a_fall_through() {
        let h = Hints {
            instance_label: Some("one"),
            consumer_id_annotation: Some("1"),
            ..Hints::default()
        };
        assert_eq!(
            find(&h, "orders"),
            Err(InstanceError::NotANumber {
                source: Source::InstanceLabel,
                value: "one".into()
            })
        );
        for bad in ["-1", "+1", "01", "1.0", "", "99999999999"] {
            let h = Hints {
                instance_label: Some(bad),
                ..Hints::default()
            };
            assert!(find(&h, "orders").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deployment_names_match_only_base_dash_number() {
        for (name, want) in [
            ("orders-2", Some(2)),
            ("orders-10", Some(10)),
            ("orders-last", None),
            ("orders2", None),
            ("orders-2-canary", None),
            ("payments-2", None),
            ("orders-", None),
        ] {
            let h = Hints {
                deployment_name: Some(name),
                ..Hints::default()
            };
            assert_eq!(find(&h, "orders").ok().map(|(n, _)| n), want, "{name}");
        }
    }
}
