//! What a labelled Pod or Deployment gets: its instance, partitions, env vars,
//! runtime hints and resources, as a JSON Patch. Pure: values in, values out.

pub mod hints;
pub mod instance;
pub mod partition;
pub mod patch;
pub mod settings;
pub mod template;
pub mod workload;

use crate::api::keys;

pub use patch::{Injection, Mutation, Ops, PatchText};
pub use settings::{ConsumerSettings, ContainerTarget, InstancePlan, ResourceSource, Resources};

use instance::{Hints, InstanceError, Source};
use workload::{Meta, Workload};

/// Why a workload is refused, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub message: String,
    /// The field to fix, apiserver style (`metadata.labels[...]`).
    pub field: Option<String>,
}

impl Denial {
    fn new(message: String, field: Option<String>) -> Self {
        Denial { message, field }
    }
}

/// The decision for a workload whose Consumer is known; its patch as json-patch's
/// operations, or as [`PatchText`] (what the webhook sends).
#[derive(Debug)]
pub struct Decision<O = Vec<json_patch::PatchOperation>> {
    pub instance: u32,
    pub found_by: Source,
    pub source: ResourceSource,
    pub mutation: Mutation<O>,
}

/// The Consumer a workload names with its label.
pub fn consumer_name<'m>(meta: Option<&'m Meta<'_>>) -> Option<&'m str> {
    meta.and_then(|m| m.label(keys::CONSUMER))
        .filter(|name| !name.is_empty())
}

fn explicit_hints<'m>(meta: Option<&'m Meta<'_>>) -> Hints<'m> {
    let Some(m) = meta else {
        return Hints::default();
    };
    Hints {
        instance_label: m.label(keys::INSTANCE),
        instance_annotation: m.annotation(keys::INSTANCE),
        consumer_id_annotation: m.annotation(keys::CONSUMER_ID),
        pod_index_label: m.label(keys::POD_INDEX),
        job_completion_index_annotation: m.annotation(keys::JOB_COMPLETION_INDEX),
        deployment_name: None,
    }
}

struct ConsumerKey<'a>(&'a ConsumerSettings);

impl std::fmt::Display for ConsumerKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0.namespace, self.0.name)
    }
}

fn resolve<'s>(
    hints: &Hints<'_>,
    settings: &'s ConsumerSettings,
    kind: &str,
) -> Result<(InstancePlan<'s>, Source), Denial> {
    // Written only into a denial.
    let key = ConsumerKey(settings);
    let last = settings.instances() - 1;
    let (id, source) = instance::find(hints, &settings.base_name).map_err(|e| match e {
        InstanceError::NotANumber { source, value } => Denial::new(
            format!(
                "{source}: {value:?} is not an instance number of Consumer {key}: set it to a number in 0..{last}"
            ),
            Some(source.field()),
        ),
        InstanceError::Unknown => Denial::new(
            format!(
                "cannot tell which instance of Consumer {key} this {kind} is ({} instances, 0..{last}): \
                 set the label {}: \"<n>\" or the annotation {}: \"<n>\"{}; \
                 StatefulSet Pods are recognised by {} and Indexed Job Pods by {}",
                settings.instances(),
                keys::INSTANCE,
                keys::CONSUMER_ID,
                if kind == "Deployment" {
                    format!(", or name the Deployment {}-<n>", settings.base_name)
                } else {
                    String::new()
                },
                keys::POD_INDEX,
                keys::JOB_COMPLETION_INDEX,
            ),
            Some(format!("metadata.labels[{}]", keys::INSTANCE)),
        ),
    })?;
    let plan = settings.instance(id).ok_or_else(|| {
        Denial::new(
            format!(
                "instance {id} (from {source}) is out of range: Consumer {key} has {} instances \
                 (0..{last}) for {} partitions at {} per instance; use an instance in 0..{last}, \
                 or give the Consumer more instances (numPartitions, numPartitionsPerInstance)",
                settings.instances(),
                settings.num_partitions(),
                settings.num_partitions().div_ceil(settings.instances()),
            ),
            Some(source.field()),
        )
    })?;
    Ok((plan, source))
}

fn injection<'s>(
    plan: InstancePlan<'s>,
    settings: &'s ConsumerSettings,
    ratio: f64,
) -> Injection<'s> {
    Injection::new(
        plan,
        &settings.partition_env_key,
        settings.num_partitions(),
        settings.instances(),
        ratio,
    )
}

/// Decides a Pod.
pub fn decide_pod(
    pod: &Workload<'_>,
    settings: &ConsumerSettings,
    gomemlimit_ratio: f64,
) -> Result<Decision, Denial> {
    decide_pod_into(pod, settings, gomemlimit_ratio)
}

/// [`decide_pod`] with the patch written into `O`.
pub fn decide_pod_into<O: Ops>(
    pod: &Workload<'_>,
    settings: &ConsumerSettings,
    gomemlimit_ratio: f64,
) -> Result<Decision<O>, Denial> {
    let meta = pod.metadata.as_ref();
    let (plan, found_by) = resolve(&explicit_hints(meta), settings, "Pod")?;
    let source = plan.source;
    let instance = plan.id;
    let inj = injection(plan, settings, gomemlimit_ratio);
    let mutation = patch::pod_into(meta, pod.spec.as_ref().map(|s| s.containers()), &inj);
    Ok(Decision {
        instance,
        found_by,
        source,
        mutation,
    })
}

/// Decides a Deployment. The instance is read from the Deployment's own metadata,
/// then from its pod template's, then from its name (`<spec.name>-<n>`).
pub fn decide_deployment(
    dep: &Workload<'_>,
    settings: &ConsumerSettings,
    gomemlimit_ratio: f64,
) -> Result<Decision, Denial> {
    decide_deployment_into(dep, settings, gomemlimit_ratio)
}

/// [`decide_deployment`] with the patch written into `O`.
pub fn decide_deployment_into<O: Ops>(
    dep: &Workload<'_>,
    settings: &ConsumerSettings,
    gomemlimit_ratio: f64,
) -> Result<Decision<O>, Denial> {
    let meta = dep.metadata.as_ref();
    let template = dep.spec.as_ref().and_then(|s| s.template.as_ref());
    let template_meta = template.and_then(|t| t.metadata.as_ref());
    // Rule by rule over both places (the Deployment's own metadata first): an
    // instance label in the pod template outranks a consumer-id annotation on the
    // Deployment, which may be konsumer's own from an earlier admission.
    let mut hints = explicit_hints(meta).or(explicit_hints(template_meta));
    hints.deployment_name = meta.and_then(|m| m.name.as_ref()).map(|n| n.as_str());
    let (plan, found_by) = resolve(&hints, settings, "Deployment")?;
    let source = plan.source;
    let instance = plan.id;
    let inj = injection(plan, settings, gomemlimit_ratio);
    let mutation = patch::deployment_into(
        meta,
        template_meta,
        template
            .and_then(|t| t.spec.as_ref())
            .map(|s| s.containers()),
        template.is_some(),
        &inj,
    );
    Ok(Decision {
        instance,
        found_by,
        source,
        mutation,
    })
}

#[cfg(test)]
mod tests;
