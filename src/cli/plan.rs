//! `konsumer plan -f consumer.yaml`: a dry run of the workload webhook for every
//! instance of a Consumer. Prometheus is read (unless `--offline`) and the
//! predictor and state machine run as the reconciler would; then each instance's
//! Pod (built from `deploymentTemplate`) is passed through the same decision and
//! patch a real request gets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};

use std::sync::Arc;

use crate::api::{Consumer, ContainerResources, GROUP, ScalingState, VERSION_V1, env, keys};
use crate::cli::{Output, read_input};
use crate::inject::workload::Workload;
use crate::inject::{self, ConsumerSettings};
use crate::manage::{self, Change, Kept, Management, Owner, Recipe, live, policy, seed};
use crate::notice;
use crate::reconciler::prometheus::PromClient;
use crate::reconciler::read_metrics;
use crate::scaling::spec::autoscaler_disabled;
use crate::scaling::{self, Metrics as StepMetrics, ScalingSpec, StepInput, predict};
use crate::store::local::parse_consumers;
use crate::telemetry::Metrics;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Consumer manifest(s), multi-document YAML or JSON; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        env = "KONSUMER_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
    /// Fraction of a container's memory limit written to GOMEMLIMIT.
    #[arg(long, env = "KONSUMER_GOMEMLIMIT_RATIO", default_value = "0.8", value_parser = crate::cli::ratio)]
    pub gomemlimit_ratio: f64,
    /// Do not query Prometheus: show what the status in the file (or the fallback) gives.
    #[arg(long, env = "KONSUMER_PLAN_OFFLINE")]
    pub offline: bool,
    /// Budget of one Prometheus query.
    #[arg(long, env = "KONSUMER_PROMETHEUS_TIMEOUT", default_value = "5s", value_parser = crate::cli::positive_duration)]
    pub prometheus_timeout: std::time::Duration,
    /// The Deployments that exist now (`kubectl get deployments -o yaml` output,
    /// manifests, or a directory of them such as DIR/.konsumer/deployments):
    /// the plan says which konsumer would create, roll, update or delete.
    /// Without it every instance's Deployment is new.
    #[arg(long, env = "KONSUMER_PLAN_DEPLOYMENTS", value_name = "FILE|DIR")]
    pub deployments: Option<PathBuf>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerPlan {
    pub consumer: String,
    pub num_partitions: u32,
    /// Where the metrics came from, or why there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
    pub instances: Vec<InstanceView>,
    /// What konsumer would do to the Consumer's managed Deployments.
    pub deployments: DeploymentsPlan,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentsPlan {
    /// Whether konsumer manages this Consumer's Deployments.
    pub managed: bool,
    /// Why not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One line per Deployment, rollouts in the order they would go (one at a time).
    pub actions: Vec<DeploymentAction>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentAction {
    pub deployment: String,
    /// `create`, `rollout`, `update` (metadata only), `delete`, `unchanged`,
    /// `paused`, `notOwned` or `stalled`.
    pub action: &'static str,
    /// What changes, or why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub detail: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub instance: u32,
    pub partitions: Vec<u32>,
    /// `recommendation` (from the status) or `fallback` (from resourcePolicy).
    pub resources_from: &'static str,
    /// Scaling state from the live metrics (prometheus mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ScalingState>,
    /// Largest partition lag, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Messages per second the instance must consume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<f64>,
    /// The prediction waiting out its pending period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<ContainerResources>>,
    pub containers: Vec<ContainerView>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerView {
    pub name: String,
    pub init: bool,
    pub env: BTreeMap<String, String>,
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

/// The pod template of the Consumer's `deploymentTemplate`, or a Pod with one
/// container per resource policy when there is none.
fn pod_template(consumer: &Consumer) -> Value {
    if let Some(t) = consumer
        .spec
        .deployment_template
        .as_ref()
        .map(|d| d.to_value())
        .and_then(|mut d| d.get_mut("template").map(Value::take))
        .filter(|t| t.is_object())
    {
        return t;
    }
    let names: Vec<Value> = consumer
        .spec
        .container_policies()
        .iter()
        .filter_map(|p| p.container_name.clone())
        .map(|n| json!({ "name": n }))
        .collect();
    json!({ "spec": { "containers": names } })
}

/// What every instance of `consumer` gets now.
pub fn plan(consumer: &Consumer, gomemlimit_ratio: f64) -> anyhow::Result<ConsumerPlan> {
    plan_with(consumer, gomemlimit_ratio, &[])
}

/// The owner of the Consumer's Deployments: its uid, or (a manifest has none)
/// the uid its existing Deployments name for it.
fn owner_for(consumer: &Consumer, existing: &[Value]) -> Owner {
    let name = consumer.metadata.name.clone().unwrap_or_default();
    let uid = consumer.metadata.uid.clone().or_else(|| {
        existing.iter().find_map(|d| match live::controller(d) {
            Some(("Consumer", n, uid)) if n == name => Some(uid.to_string()),
            _ => None,
        })
    });
    Owner {
        api_version: format!("{GROUP}/{VERSION_V1}"),
        kind: "Consumer".into(),
        uid: uid.unwrap_or_else(|| format!("new-{name}")),
        name,
    }
}

/// What the Deployment manager would do now, given the Deployments in
/// `existing`: the same decision the reconciler makes.
pub fn deployments_plan(
    consumer: &Consumer,
    existing: &[Value],
    gomemlimit_ratio: f64,
) -> anyhow::Result<DeploymentsPlan> {
    let owner = owner_for(consumer, existing);
    let namespace = consumer.metadata.namespace.clone().unwrap_or_default();
    let in_namespace: Vec<&Value> = existing
        .iter()
        .filter(|d| live::namespace(d).is_empty() || live::namespace(d) == namespace)
        .collect();
    let ours: Vec<&Value> = in_namespace
        .iter()
        .copied()
        .filter(|d| live::controller(d).is_some_and(|(_, _, u)| u == owner.uid))
        .collect();
    if let Management::Off { reason, message } =
        policy::management(true, consumer, !ours.is_empty(), &[])
    {
        return Ok(DeploymentsPlan {
            managed: false,
            reason: Some(format!("{reason}: {message}")),
            actions: Vec::new(),
        });
    }
    let mut consumer = consumer.clone();
    if let Ok(Some(spec)) = ScalingSpec::from_consumer(&consumer) {
        let previous = consumer
            .status
            .as_ref()
            .and_then(|s| s.instances.clone())
            .unwrap_or_default();
        if let Some(seeded) = seed::seed(&spec, &previous, &ours, jiff::Timestamp::now()) {
            consumer
                .status
                .get_or_insert_with(Default::default)
                .instances = Some(seeded);
        }
    }
    let settings = ConsumerSettings::from_consumer(&consumer)?;
    let template = consumer
        .spec
        .deployment_template
        .as_ref()
        .map(|t| t.to_value())
        .unwrap_or_default();
    let recipe = Recipe {
        settings: &settings,
        template: &template,
        owner: &owner,
        gomemlimit_ratio,
    };
    let decision = manage::decide(&recipe, &in_namespace, None).map_err(anyhow::Error::msg)?;
    let mut actions = Vec::new();
    let mut touched = std::collections::HashSet::new();
    for w in decision.writes.iter().chain(&decision.rollouts) {
        touched.insert(w.name.clone());
        let mut detail = w.changes.clone();
        if w.change == Change::Rollout && w.from != w.to {
            detail.insert(0, notice::resource_change(&w.from, &w.to));
        }
        actions.push(DeploymentAction {
            deployment: w.name.clone(),
            action: match w.change {
                Change::Create => "create",
                Change::Rollout => "rollout",
                Change::Metadata => "update",
            },
            detail,
        });
    }
    for r in &decision.removals {
        touched.insert(r.name.clone());
        actions.push(DeploymentAction {
            deployment: r.name.clone(),
            action: "delete",
            detail: vec![r.why.clone()],
        });
    }
    for k in &decision.kept {
        let (name, action) = match k {
            Kept::Paused { name, .. } => (name, "paused"),
            Kept::Foreign { name, .. } => (name, "notOwned"),
            Kept::Stalled { name, .. } => (name, "stalled"),
        };
        if touched.insert(name.clone()) {
            actions.push(DeploymentAction {
                deployment: name.clone(),
                action,
                detail: vec![k.describe()],
            });
        }
    }
    for id in 0..settings.instances() {
        let name = recipe.name(id);
        if !touched.contains(&name) {
            actions.push(DeploymentAction {
                deployment: name,
                action: "unchanged",
                detail: Vec::new(),
            });
        }
    }
    Ok(DeploymentsPlan {
        managed: true,
        reason: None,
        actions,
    })
}

/// [`plan`], with the Deployments that exist now.
pub fn plan_with(
    consumer: &Consumer,
    gomemlimit_ratio: f64,
    existing: &[Value],
) -> anyhow::Result<ConsumerPlan> {
    let settings = ConsumerSettings::from_consumer(consumer)?;
    let template = pod_template(consumer);
    let injected = [
        settings.partition_env_key.as_str(),
        env::GOMAXPROCS,
        env::GOMEMLIMIT,
        env::INSTANCE,
        env::NUM_PARTITIONS,
        env::NUM_INSTANCES,
    ];
    let mut instances = Vec::new();
    for id in 0..settings.instances() {
        // The template is opaque: any part of it may have the wrong shape.
        let mut metadata = template
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut labels = metadata
            .get("labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        labels.insert(keys::CONSUMER.into(), json!(settings.name));
        labels.insert(keys::INSTANCE.into(), json!(id.to_string()));
        metadata.insert("labels".into(), Value::Object(labels));
        let spec = template
            .get("spec")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or(json!({}));
        let mut pod = json!({ "metadata": metadata, "spec": spec });
        let text = pod.to_string();
        let view: Workload = serde_json::from_str(&text).context("deploymentTemplate.template")?;
        let decision = inject::decide_pod(&view, &settings, gomemlimit_ratio)
            .map_err(|d| anyhow::anyhow!(d.message))?;
        json_patch::patch(&mut pod, &decision.mutation.ops).context("applying the patch")?;
        let mut containers = Vec::new();
        for (list, init) in [("initContainers", true), ("containers", false)] {
            for c in pod["spec"][list].as_array().into_iter().flatten() {
                let env = c["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| Some((e["name"].as_str()?, e["value"].as_str()?)))
                    .filter(|(n, _)| injected.contains(n))
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect();
                let side = |name: &str| -> BTreeMap<String, String> {
                    c["resources"][name]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| {
                            (
                                k.clone(),
                                v.as_str()
                                    .map(String::from)
                                    .unwrap_or_else(|| v.to_string()),
                            )
                        })
                        .collect()
                };
                containers.push(ContainerView {
                    name: c["name"].as_str().unwrap_or_default().to_string(),
                    init,
                    env,
                    requests: side("requests"),
                    limits: side("limits"),
                });
            }
        }
        let partitions = settings
            .layout
            .bucket(id)
            .map(|r| r.collect())
            .unwrap_or_default();
        let status = consumer
            .status
            .as_ref()
            .and_then(|s| s.instances.as_ref())
            .and_then(|i| i.iter().find(|i| i.id == id as i32));
        instances.push(InstanceView {
            instance: id,
            partitions,
            resources_from: decision.source.as_str(),
            state: status.map(|s| s.state),
            lag_seconds: None,
            load: None,
            pending: status.and_then(|s| s.pending.clone()),
            containers,
        });
    }
    Ok(ConsumerPlan {
        consumer: consumer.key(),
        num_partitions: settings.num_partitions(),
        metrics: None,
        instances,
        deployments: deployments_plan(consumer, existing, gomemlimit_ratio)?,
    })
}

/// The plan with the live metrics: Prometheus is read now and the predictor and
/// state machine run from the status in the file, as the reconciler would.
pub async fn live_plan(consumer: &Consumer, args: &PlanArgs) -> anyhow::Result<ConsumerPlan> {
    let existing = match &args.deployments {
        Some(path) => read_deployments(path)?,
        None => Vec::new(),
    };
    live_plan_with(consumer, args, &existing).await
}

async fn live_plan_with(
    consumer: &Consumer,
    args: &PlanArgs,
    existing: &[Value],
) -> anyhow::Result<ConsumerPlan> {
    let plan = |c: &Consumer, ratio: f64| plan_with(c, ratio, existing);
    let spec = match ScalingSpec::from_consumer(consumer) {
        Ok(Some(spec)) if !args.offline => spec,
        Ok(Some(_)) => return plan(consumer, args.gomemlimit_ratio),
        Ok(None) => {
            let mut p = plan(consumer, args.gomemlimit_ratio)?;
            p.metrics = Some("not autoscaled (spec.autoscaler.mode is not prometheus)".into());
            return Ok(p);
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    let metrics = Arc::new(Metrics::default());
    let prom = PromClient::new(args.prometheus_timeout, metrics)?;
    let now = jiff::Timestamp::now();
    let snapshot = read_metrics(&prom, consumer, spec.layout.partitions(), now).await;
    let (partitions, note) = match snapshot {
        Ok(s) => {
            let note = if s.issues.is_empty() {
                format!("live: {} partitions with data", s.partitions.len())
            } else {
                format!(
                    "live: {} partitions with data; {}",
                    s.partitions.len(),
                    s.issues.join("; ")
                )
            };
            (Some(s.partitions), note)
        }
        Err(e) => (
            None,
            format!("Prometheus unavailable ({e}); showing the status in the file"),
        ),
    };
    let previous = consumer
        .status
        .as_ref()
        .and_then(|s| s.instances.clone())
        .unwrap_or_default();
    if partitions.is_none() && previous.is_empty() {
        // As in the reconciler: no recommendation before metrics were ever read.
        let mut p = plan(consumer, args.gomemlimit_ratio)?;
        p.metrics = Some(note);
        return Ok(p);
    }
    let out = scaling::step(StepInput {
        spec: &spec,
        previous: &previous,
        restored: None,
        metrics: partitions.as_ref().map(|p| StepMetrics {
            partitions: p,
            observed_at: now,
            failing: false,
        }),
        frozen: autoscaler_disabled(consumer),
        now,
    });
    let mut with_status = consumer.clone();
    with_status
        .status
        .get_or_insert_with(Default::default)
        .instances = Some(out.into_owned());
    let mut p = plan(&with_status, args.gomemlimit_ratio)?;
    p.metrics = Some(note);
    if let Some(partitions) = &partitions {
        for (inst, range) in p.instances.iter_mut().zip(spec.layout.buckets()) {
            if let Some(obs) = predict::observe(range, partitions, spec.recovery) {
                inst.lag_seconds = Some(obs.max_lag_seconds);
                inst.load = Some(obs.load);
            }
        }
    }
    Ok(p)
}

/// The Deployments in a file (a `List`, `DeploymentList` or YAML documents) or
/// in the files under a directory.
pub fn read_deployments(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .collect();
        entries.sort();
        for p in entries {
            let is_manifest = matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            );
            if p.is_dir() || is_manifest {
                out.extend(read_deployments(&p)?);
            }
        }
        return Ok(out);
    }
    let text = read_input(path)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| anyhow::anyhow!("{}: not valid YAML: {e}", path.display()))?;
    for doc in docs {
        match doc.get("kind").and_then(Value::as_str) {
            Some("Deployment") => out.push(doc),
            Some("List" | "DeploymentList") => out.extend(
                doc.get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|i| i.get("kind").is_none_or(|k| k == "Deployment"))
                    .cloned(),
            ),
            _ => {}
        }
    }
    Ok(out)
}

fn render_text(plan: &ConsumerPlan) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Consumer {}: {} partitions over {} instances",
        plan.consumer,
        plan.num_partitions,
        plan.instances.len()
    );
    let list = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if let Some(m) = &plan.metrics {
        let _ = writeln!(out, "metrics: {m}");
    }
    for inst in &plan.instances {
        let parts: Vec<String> = inst.partitions.iter().map(u32::to_string).collect();
        let _ = write!(
            out,
            "\ninstance {}  partitions {}  (resources: {})",
            inst.instance,
            parts.join(","),
            inst.resources_from
        );
        if let Some(state) = inst.state {
            let _ = write!(out, "  state {}", state.as_str());
        }
        if let (Some(lag), Some(load)) = (inst.lag_seconds, inst.load) {
            let _ = write!(out, "  lag {lag:.0}s  load {load:.0} msg/s");
        }
        let _ = writeln!(out);
        if let Some(pending) = &inst.pending {
            for c in pending {
                let cpu = c.requests.get("cpu").map(|q| q.0.as_str()).unwrap_or("-");
                let _ = writeln!(out, "  pending for {}: cpu request {cpu}", c.container_name);
            }
        }
        for c in &inst.containers {
            let kind = if c.init {
                "init container"
            } else {
                "container"
            };
            let _ = writeln!(out, "  {kind} {}", c.name);
            if !c.requests.is_empty() || !c.limits.is_empty() {
                let _ = writeln!(out, "    requests: {}", list(&c.requests));
                let _ = writeln!(out, "    limits:   {}", list(&c.limits));
            }
            let _ = writeln!(out, "    env:      {}", list(&c.env));
        }
    }
    let d = &plan.deployments;
    match &d.reason {
        Some(reason) => {
            let _ = writeln!(out, "\ndeployments: not managed ({reason})");
        }
        None => {
            let _ = writeln!(
                out,
                "\ndeployments (managed by konsumer; rollouts one at a time, in this order):"
            );
            for a in &d.actions {
                let _ = write!(out, "  {:<9} {}", a.action, a.deployment);
                if !a.detail.is_empty() {
                    let _ = write!(out, ": {}", a.detail.join("; "));
                }
                let _ = writeln!(out);
            }
        }
    }
    out
}

pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let mut plans = Vec::new();
    for path in &args.files {
        let (consumers, problems) = parse_consumers(&read_input(path)?);
        if let Some(p) = problems.first() {
            anyhow::bail!("{}: {p}", path.display());
        }
        anyhow::ensure!(
            !consumers.is_empty(),
            "{}: no Consumer in this file",
            path.display()
        );
        for c in consumers {
            plans.push(live_plan(&c, &args).await.with_context(|| c.key())?);
        }
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plans)?),
        Output::Text => {
            for p in &plans {
                print!("{}", render_text(p));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_plan_lists_every_instance_with_env_and_fallback_resources() {
        let (cs, _) = parse_consumers(include_str!("../../tests/fixtures/consumer-orders.yaml"));
        let p = plan(&cs[0], 0.8).unwrap();
        assert_eq!(p.instances.len(), 4);
        let i2 = &p.instances[2];
        assert_eq!(i2.partitions, vec![6, 7]);
        assert_eq!(i2.resources_from, "fallback");
        let consumer = i2.containers.iter().find(|c| c.name == "consumer").unwrap();
        assert_eq!(consumer.env["KAFKA_PARTITIONS"], "6,7");
        assert_eq!(consumer.env["GOMEMLIMIT"], "102MiB");
        assert_eq!(consumer.requests["cpu"], "100m");
        let shipper = i2
            .containers
            .iter()
            .find(|c| c.name == "log-shipper")
            .unwrap();
        assert_eq!(shipper.limits["memory"], "64Mi");
        let text = render_text(&p);
        assert!(text.contains("instance 3  partitions 8,9"), "{text}");
    }

    #[test]
    fn a_misshapen_template_is_planned_not_panicked_on() {
        let (cs, _) = parse_consumers(include_str!("../../tests/fixtures/consumer-orders.yaml"));
        for (metadata, spec) in [
            (json!("not-an-object"), json!({"containers": []})),
            (json!({"labels": ["a", "b"]}), json!({"containers": []})),
            (json!({"labels": {"team": "data"}}), json!(42)),
        ] {
            let mut c = cs[0].clone();
            c.spec.deployment_template =
                Some(json!({"template": {"metadata": metadata, "spec": spec}}).into());
            let p = plan(&c, 0.8).unwrap_or_else(|e| panic!("{metadata} {spec}: {e}"));
            assert_eq!(p.instances.len(), 4, "{metadata} {spec}");
        }
    }

    #[test]
    fn the_plan_says_which_deployments_konsumer_would_create_roll_update_or_delete() {
        let (cs, _) = parse_consumers(include_str!("../../tests/fixtures/consumer-orders.yaml"));
        let c = &cs[0];
        let fresh = plan(c, 0.8).unwrap();
        assert!(fresh.deployments.managed);
        let actions: Vec<(&str, &str)> = fresh
            .deployments
            .actions
            .iter()
            .map(|a| (a.action, a.deployment.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("create", "orders-0"),
                ("create", "orders-1"),
                ("create", "orders-2"),
                ("create", "orders-3")
            ]
        );

        // What exists: as konsumer made them (uid u-1), then changed by hand.
        let owner = Owner {
            api_version: "konsumerator.lwolf.org/v1".into(),
            kind: "Consumer".into(),
            name: "orders".into(),
            uid: "u-1".into(),
        };
        let settings = ConsumerSettings::from_consumer(c).unwrap();
        let template = c.spec.deployment_template.as_ref().unwrap().to_value();
        let recipe = Recipe {
            settings: &settings,
            template: &template,
            owner: &owner,
            gomemlimit_ratio: 0.8,
        };
        let mut existing: Vec<Value> = manage::decide(&recipe, &[], None)
            .unwrap()
            .writes
            .into_iter()
            .map(|w| w.body)
            .collect();
        existing[1]["spec"]["template"]["spec"]["containers"][0]["image"] = json!("old:1");
        existing[2]["metadata"]["annotations"]["konsumerator.lwolf.org/disable-autoscaler"] =
            json!("");
        existing[3]["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("partitions");
        let mut extra = existing[0].clone();
        extra["metadata"]["name"] = json!("orders-7");
        extra["metadata"]["annotations"]["konsumerator.lwolf.org/consumer-id"] = json!("7");
        existing.push(extra);
        let p = plan_with(c, 0.8, &existing).unwrap();
        let actions: Vec<(&str, &str)> = p
            .deployments
            .actions
            .iter()
            .map(|a| (a.action, a.deployment.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                ("update", "orders-3"),
                ("rollout", "orders-1"),
                ("delete", "orders-7"),
                ("paused", "orders-2"),
                ("unchanged", "orders-0")
            ]
        );
        let rollout = &p.deployments.actions[1];
        assert_eq!(
            rollout.detail,
            [
                "spec.template.spec.containers[consumer].image=registry.example.com/orders-consumer:1.4.2"
            ]
        );
        let text = render_text(&p);
        assert!(
            text.contains("  rollout   orders-1: spec.template.spec.containers[consumer].image="),
            "{text}"
        );

        let mut opted_out = c.clone();
        opted_out
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(keys::MANAGE_DEPLOYMENTS.into(), "false".into());
        let p = plan(&opted_out, 0.8).unwrap();
        assert!(!p.deployments.managed);
        assert!(
            render_text(&p).contains("deployments: not managed (OptedOut: "),
            "{}",
            render_text(&p)
        );
    }

    #[tokio::test]
    async fn no_recommendation_when_metrics_were_never_read() {
        let (cs, _) = parse_consumers(include_str!("../../tests/fixtures/consumer-orders.yaml"));
        let mut c = cs[0].clone();
        if let Some(p) = c
            .spec
            .autoscaler
            .as_mut()
            .map(crate::api::Shared::make_mut)
            .and_then(|a| a.prometheus.as_mut())
        {
            p.address = Some(vec!["http://127.0.0.1:9".into()]);
        }
        let args = PlanArgs {
            files: vec![],
            output: Output::Text,
            gomemlimit_ratio: 0.8,
            offline: false,
            prometheus_timeout: std::time::Duration::from_secs(1),
            deployments: None,
        };
        let p = live_plan(&c, &args).await.unwrap();
        assert!(
            p.metrics
                .as_deref()
                .unwrap_or_default()
                .contains("Prometheus unavailable"),
            "{:?}",
            p.metrics
        );
        assert!(
            p.instances
                .iter()
                .all(|i| i.resources_from == "fallback" && i.state.is_none()),
            "{p:?}"
        );
    }
}
