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

use crate::api::{Consumer, ContainerResources, ScalingState, env, keys};
use crate::cli::{Output, read_input};
use crate::inject::workload::Workload;
use crate::inject::{self, ConsumerSettings};
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
        .and_then(|d| d.get("template"))
        .filter(|t| t.is_object())
    {
        return t.clone();
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
    })
}

/// The plan with the live metrics: Prometheus is read now and the predictor and
/// state machine run from the status in the file, as the reconciler would.
pub async fn live_plan(consumer: &Consumer, args: &PlanArgs) -> anyhow::Result<ConsumerPlan> {
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
                Some(json!({"template": {"metadata": metadata, "spec": spec}}));
            let p = plan(&c, 0.8).unwrap_or_else(|e| panic!("{metadata} {spec}: {e}"));
            assert_eq!(p.instances.len(), 4, "{metadata} {spec}");
        }
    }

    #[tokio::test]
    async fn no_recommendation_when_metrics_were_never_read() {
        let (cs, _) = parse_consumers(include_str!("../../tests/fixtures/consumer-orders.yaml"));
        let mut c = cs[0].clone();
        if let Some(p) = c
            .spec
            .autoscaler
            .as_mut()
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
