//! A Consumer's autoscaler settings, resolved once into numbers.

use std::time::Duration;

use crate::api::duration::parse_go_duration;
use crate::api::quantity::Milli;
use crate::api::{Consumer, keys};
use crate::inject::partition::{Layout, layout_of};
use crate::inject::settings::{ALL_CONTAINERS, ContainerTarget, Resources, fallback_targets};
use crate::validation::defaults;

/// Bounds of one container (a container policy not switched `Off`).
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub name: String,
    pub min: Resources,
    pub max: Resources,
}

/// Everything the predictor and the state machine need.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingSpec {
    pub layout: Layout,
    pub rate_per_core: f64,
    /// Bytes (in milli-units) of memory per whole core of CPU limit.
    pub ram_per_core: Milli,
    pub cpu_increment: Milli,
    pub recovery: Duration,
    pub tolerable_lag: Duration,
    pub critical_lag: Option<Duration>,
    pub pending_up: Duration,
    pub pending_down: Duration,
    pub min_sync: Duration,
    /// The container the load estimate is for: the first container policy (the
    /// consumer itself); `*` when the Consumer names none. Other policies are
    /// sidecars and keep their fallback (Konsumerator gave every sidecar the
    /// consumer's estimate).
    pub scaled: String,
    pub policies: Vec<Policy>,
    pub global_max: Resources,
    pub fallback: Vec<ContainerTarget>,
}

fn duration(field: &str, value: Option<&str>, default: Option<&str>) -> Result<Duration, String> {
    let Some(text) = value.or(default) else {
        return Err(format!("{field} is not set"));
    };
    let d = parse_go_duration(text).map_err(|e| format!("{field} {text:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{field} must be greater than 0"));
    }
    Ok(d)
}

fn quantity(field: &str, value: Option<&str>, default: Option<&str>) -> Result<Milli, String> {
    let Some(text) = value.or(default) else {
        return Err(format!("{field} is not set"));
    };
    let q = Milli::parse(text).map_err(|e| format!("{field} {text:?}: {e}"))?;
    if !q.is_positive() {
        return Err(format!("{field} must be greater than 0"));
    }
    Ok(q)
}

/// Whether the Consumer carries `konsumerator.lwolf.org/disable-autoscaler`.
pub fn autoscaler_disabled(c: &Consumer) -> bool {
    c.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(keys::DISABLE_AUTOSCALER))
}

impl ScalingSpec {
    /// `Ok(None)` when the Consumer is not in prometheus mode (no autoscaling);
    /// `Err` when its settings cannot be used (the validating webhook would have
    /// refused them).
    pub fn from_consumer(c: &Consumer) -> Result<Option<Self>, String> {
        let spec = &c.spec;
        let Some(autoscaler) = &spec.autoscaler else {
            return Ok(None);
        };
        if autoscaler.mode.as_deref() != Some("prometheus") {
            return Ok(None);
        }
        let prom = autoscaler
            .prometheus
            .as_ref()
            .ok_or("spec.autoscaler.prometheus is not set")?;
        let layout = layout_of(spec.num_partitions, spec.num_partitions_per_instance)?;
        let rate = prom
            .rate_per_core
            .filter(|r| *r > 0)
            .ok_or("spec.autoscaler.prometheus.ratePerCore must be greater than 0")?;
        let p = "spec.autoscaler.prometheus";
        let policies = spec
            .container_policies()
            .iter()
            .filter(|policy| !policy.is_off())
            .filter_map(|policy| {
                let name = policy.container_name.clone().filter(|n| !n.is_empty())?;
                Some((name, policy))
            })
            .map(|(name, policy)| {
                Ok(Policy {
                    min: Resources::from_list(policy.min_allowed.as_ref())
                        .map_err(|e| format!("{name}: minAllowed.{e}"))?,
                    max: Resources::from_list(policy.max_allowed.as_ref())
                        .map_err(|e| format!("{name}: maxAllowed.{e}"))?,
                    name,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let off: Vec<&str> = spec
            .container_policies()
            .iter()
            .filter(|policy| policy.is_off())
            .filter_map(|policy| policy.container_name.as_deref())
            .collect();
        let first_template_container = spec
            .deployment_template
            .as_ref()
            .and_then(|t| t.container_names())
            .into_iter()
            .flatten()
            .find(|n| !off.contains(&n.as_str()));
        let scaled = policies
            .first()
            .map(|p| p.name.clone())
            .or(first_template_container)
            .unwrap_or_else(|| ALL_CONTAINERS.to_string());
        let global_max = Resources::from_list(
            spec.resource_policy
                .as_ref()
                .and_then(|r| r.global_policy.as_ref())
                .and_then(|g| g.max_allowed.as_ref()),
        )
        .map_err(|e| format!("globalPolicy.maxAllowed.{e}"))?;
        Ok(Some(ScalingSpec {
            layout,
            rate_per_core: rate as f64,
            ram_per_core: quantity(
                &format!("{p}.ramPerCore"),
                prom.ram_per_core.as_ref().map(|q| q.0.as_str()),
                None,
            )?,
            cpu_increment: quantity(
                &format!("{p}.cpuIncrement"),
                prom.cpu_increment.as_ref().map(|q| q.0.as_str()),
                Some(defaults::CPU_INCREMENT),
            )?,
            recovery: duration(
                &format!("{p}.recoveryTime"),
                prom.recovery_time.as_deref(),
                None,
            )?,
            tolerable_lag: duration(
                &format!("{p}.tolerableLag"),
                prom.tolerable_lag.as_deref(),
                None,
            )?,
            critical_lag: prom
                .critical_lag
                .as_deref()
                .map(|v| duration(&format!("{p}.criticalLag"), Some(v), None))
                .transpose()?,
            pending_up: duration(
                "spec.autoscaler.pendingScaleUpDuration",
                autoscaler.pending_scale_up_duration.as_deref(),
                Some(defaults::PENDING_SCALE_UP),
            )?,
            pending_down: duration(
                "spec.autoscaler.pendingScaleDownDuration",
                autoscaler.pending_scale_down_duration.as_deref(),
                Some(defaults::PENDING_SCALE_DOWN),
            )?,
            min_sync: duration(
                &format!("{p}.minSyncPeriod"),
                prom.min_sync_period.as_deref(),
                Some("1m"),
            )?,
            scaled,
            policies,
            global_max,
            fallback: fallback_targets(c)?,
        }))
    }

    pub fn policy(&self, container: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == container)
    }
}
