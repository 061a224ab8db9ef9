//! The JSON Patch (RFC 6902) that gives a pod spec its partitions, runtime hints and
//! resources. Parents are added before children, keys are escaped by the pointer
//! type, entries are replaced in place (never duplicated), and an object that
//! already has everything gets no operation at all.

use std::borrow::Cow;
use std::fmt;

use json_patch::jsonptr::{PointerBuf, Token};
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::api::{env, keys};

use super::hints;
use super::partition;
use super::settings::{ContainerTarget, InstancePlan, ResourceSource, Resources};
use super::workload::{Container, Containers, Meta, Selected};

/// The operations and the warnings for the user (one per value replaced).
#[derive(Debug, Default)]
pub struct Mutation {
    pub ops: Vec<PatchOperation>,
    pub warnings: Vec<String>,
}

/// What one instance gets, computed once per request.
pub struct Injection<'a> {
    pub plan: InstancePlan<'a>,
    pub partition_env_key: &'a str,
    pub num_partitions: u32,
    pub num_instances: u32,
    pub gomemlimit_ratio: f64,
    partitions: String,
    instance: String,
    num_partitions_text: String,
    num_instances_text: String,
}

impl<'a> Injection<'a> {
    pub fn new(
        plan: InstancePlan<'a>,
        partition_env_key: &'a str,
        num_partitions: u32,
        num_instances: u32,
        gomemlimit_ratio: f64,
    ) -> Self {
        Injection {
            partitions: partition::join(plan.partitions.clone()),
            instance: plan.id.to_string(),
            num_partitions_text: num_partitions.to_string(),
            num_instances_text: num_instances.to_string(),
            plan,
            partition_env_key,
            num_partitions,
            num_instances,
            gomemlimit_ratio,
        }
    }

    pub fn partitions(&self) -> &str {
        &self.partitions
    }

    /// The env vars of a container with these final resources, Konsumerator's order.
    pub fn env_for(&self, requests: &Resources, limits: &Resources) -> Vec<(&str, Cow<'_, str>)> {
        let mut out = Vec::with_capacity(6);
        out.push((
            self.partition_env_key,
            Cow::Borrowed(self.partitions.as_str()),
        ));
        if let Some(v) = hints::gomaxprocs(requests, limits) {
            out.push((env::GOMAXPROCS, Cow::Owned(v)));
        }
        if let Some(v) = hints::gomemlimit(limits, self.gomemlimit_ratio) {
            out.push((env::GOMEMLIMIT, Cow::Owned(v)));
        }
        out.push((env::INSTANCE, Cow::Borrowed(self.instance.as_str())));
        out.push((
            env::NUM_PARTITIONS,
            Cow::Borrowed(self.num_partitions_text.as_str()),
        ));
        out.push((
            env::NUM_INSTANCES,
            Cow::Borrowed(self.num_instances_text.as_str()),
        ));
        out
    }

    fn annotations(&self) -> [(&'static str, &str); 2] {
        [
            (keys::PARTITION, &self.partitions),
            (keys::CONSUMER_ID, &self.instance),
        ]
    }
}

/// Patch for a Pod.
pub fn pod(
    meta: Option<&Meta<'_>>,
    spec: Option<Containers<'_, '_>>,
    inj: &Injection<'_>,
) -> Mutation {
    let mut b = Builder::default();
    b.annotations(meta, ptr(&["metadata"]), inj);
    if let Some(spec) = spec {
        b.pod_spec(spec, &ptr(&["spec"]), inj);
    }
    b.mutation
}

/// Patch for a Deployment: its own annotations, and the pod template's (so that the
/// Pods it creates carry their instance), env and resources.
pub fn deployment(
    meta: Option<&Meta<'_>>,
    template_meta: Option<&Meta<'_>>,
    template_spec: Option<Containers<'_, '_>>,
    has_template: bool,
    inj: &Injection<'_>,
) -> Mutation {
    let mut b = Builder::default();
    b.annotations(meta, ptr(&["metadata"]), inj);
    if has_template {
        b.annotations(template_meta, ptr(&["spec", "template", "metadata"]), inj);
        if let Some(spec) = template_spec {
            b.pod_spec(spec, &ptr(&["spec", "template", "spec"]), inj);
        }
    }
    b.mutation
}

fn ptr(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

/// `base` plus one token, in one allocation of the right size.
fn child(base: &PointerBuf, token: impl AsRef<str>) -> PointerBuf {
    let token = Token::new(token.as_ref());
    let encoded = token.encoded();
    let mut text = String::with_capacity(base.as_str().len() + 1 + encoded.len());
    text.push_str(base.as_str());
    text.push('/');
    text.push_str(encoded);
    PointerBuf::parse(text).unwrap_or_else(|_| {
        let mut p = base.clone();
        p.push_back(token);
        p
    })
}

fn env_entry(name: &str, value: &str) -> Value {
    let mut m = Map::with_capacity(2);
    m.insert("name".into(), Value::String(name.into()));
    m.insert("value".into(), Value::String(value.into()));
    Value::Object(m)
}

fn resource_object(r: &Resources) -> Value {
    let mut m = Map::new();
    if let Some(cpu) = r.cpu {
        m.insert("cpu".into(), Value::String(cpu.cpu_string()));
    }
    if let Some(memory) = r.memory {
        m.insert("memory".into(), Value::String(memory.memory_string()));
    }
    Value::Object(m)
}

/// `container "name"`, written only into warnings.
#[derive(Clone, Copy)]
struct Label<'a> {
    what: &'a str,
    name: &'a str,
}

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.what, self.name)
    }
}

#[derive(Default)]
struct Builder {
    mutation: Mutation,
}

impl Builder {
    fn add(&mut self, path: PointerBuf, value: Value) {
        self.mutation
            .ops
            .push(PatchOperation::Add(AddOperation { path, value }));
    }

    fn replace(&mut self, path: PointerBuf, value: Value) {
        self.mutation
            .ops
            .push(PatchOperation::Replace(ReplaceOperation { path, value }));
    }

    fn remove(&mut self, path: PointerBuf) {
        self.mutation
            .ops
            .push(PatchOperation::Remove(RemoveOperation { path }));
    }

    fn warn(&mut self, message: String) {
        self.mutation.warnings.push(message);
    }

    fn annotations(&mut self, meta: Option<&Meta<'_>>, meta_path: PointerBuf, inj: &Injection<'_>) {
        let wanted = inj.annotations();
        let object = || {
            Value::Object(
                wanted
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
                    .collect(),
            )
        };
        let Some(meta) = meta else {
            let mut m = Map::new();
            m.insert("annotations".into(), object());
            self.add(meta_path, Value::Object(m));
            return;
        };
        let path = child(&meta_path, "annotations");
        let Some(current) = &meta.annotations else {
            self.add(path, object());
            return;
        };
        for (key, value) in wanted {
            match current.get(key) {
                Some(cur) if cur == value => {}
                Some(cur) => {
                    self.warn(format!("annotation {key}={cur:?} replaced by {value:?}"));
                    self.replace(child(&path, key), Value::String(value.to_string()));
                }
                None => self.add(child(&path, key), Value::String(value.to_string())),
            }
        }
    }

    fn pod_spec(&mut self, spec: Containers<'_, '_>, spec_path: &PointerBuf, inj: &Injection<'_>) {
        if let Some(init) = spec.init_containers {
            let base = child(spec_path, "initContainers");
            for (i, c) in init.iter().enumerate() {
                // Init containers get resources only when a policy names them.
                let target = inj.plan.targets.iter().find(|t| t.name == c.name.as_str());
                self.container(
                    c,
                    &child(&base, i.to_string()),
                    target,
                    "init container",
                    inj,
                );
            }
        }
        if let Some(containers) = spec.containers {
            let base = child(spec_path, "containers");
            for (i, c) in containers.iter().enumerate() {
                let target = inj.plan.target_for(c.name.as_str());
                self.container(c, &child(&base, i.to_string()), target, "container", inj);
            }
        }
    }

    fn container(
        &mut self,
        c: &Container<'_>,
        path: &PointerBuf,
        target: Option<&ContainerTarget>,
        what: &str,
        inj: &Injection<'_>,
    ) {
        let label = Label {
            what,
            name: c.name.as_str(),
        };
        let source = match inj.plan.source {
            ResourceSource::Recommendation => "konsumer recommendation",
            ResourceSource::Fallback => "konsumer fallback from resourcePolicy",
        };
        let (requests, limits) = self.resources(c, path, target, label, source);
        let wanted = inj.env_for(&requests, &limits);
        self.env(c, path, &wanted, label);
    }

    /// Sets the target's resources; returns the container's final requests and limits.
    fn resources(
        &mut self,
        c: &Container<'_>,
        path: &PointerBuf,
        target: Option<&ContainerTarget>,
        label: Label<'_>,
        source: &str,
    ) -> (Resources, Resources) {
        let side = |s: Option<&Selected<'_>>| Resources {
            cpu: hints::lenient(s.and_then(|s| s.get("cpu"))),
            memory: hints::lenient(s.and_then(|s| s.get("memory"))),
        };
        let view = c.resources.as_ref();
        let current_requests = side(view.and_then(|r| r.requests.as_ref()));
        let current_limits = side(view.and_then(|r| r.limits.as_ref()));
        let Some(target) = target.filter(|t| !t.requests.is_empty() || !t.limits.is_empty()) else {
            return (current_requests, current_limits);
        };
        let merge = |want: &Resources, cur: &Resources| Resources {
            cpu: want.cpu.or(cur.cpu),
            memory: want.memory.or(cur.memory),
        };
        let final_requests = merge(&target.requests, &current_requests);
        let final_limits = merge(&target.limits, &current_limits);

        let res_path = child(path, "resources");
        let Some(view) = view else {
            let mut m = Map::new();
            for (name, want) in [("requests", &target.requests), ("limits", &target.limits)] {
                if !want.is_empty() {
                    m.insert(name.into(), resource_object(want));
                }
            }
            self.add(res_path, Value::Object(m));
            return (final_requests, final_limits);
        };
        for (name, current, want) in [
            ("requests", view.requests.as_ref(), &target.requests),
            ("limits", view.limits.as_ref(), &target.limits),
        ] {
            if want.is_empty() {
                continue;
            }
            let side_path = child(&res_path, name);
            let Some(current) = current else {
                self.add(side_path, resource_object(want));
                continue;
            };
            for (key, value) in [("cpu", want.cpu), ("memory", want.memory)] {
                let Some(value) = value else { continue };
                let text = if key == "cpu" {
                    value.cpu_string()
                } else {
                    value.memory_string()
                };
                match current.get(key) {
                    Some(cur) if hints::lenient(Some(cur)) == Some(value) => {}
                    Some(cur) => {
                        self.warn(format!(
                            "{label}: resources.{name}.{key} {cur} replaced by {text} ({source})"
                        ));
                        self.replace(child(&side_path, key), Value::String(text));
                    }
                    None => self.add(child(&side_path, key), Value::String(text)),
                }
            }
        }
        (final_requests, final_limits)
    }

    fn env(
        &mut self,
        c: &Container<'_>,
        path: &PointerBuf,
        wanted: &[(&str, Cow<'_, str>)],
        label: Label<'_>,
    ) {
        let env_path = child(path, "env");
        let Some(list) = &c.env else {
            let entries = wanted.iter().map(|(n, v)| env_entry(n, v)).collect();
            self.add(env_path, Value::Array(entries));
            return;
        };
        let is_wanted = |name: &str| wanted.iter().any(|(n, _)| *n == name);
        // Later duplicates of an injected name go first, highest index first, so
        // that every index below stays valid while they are removed.
        let mut removed = Vec::new();
        for (i, e) in list.iter().enumerate() {
            let name = e.name.as_str();
            if is_wanted(name) && list[..i].iter().any(|p| p.name.as_str() == name) {
                removed.push(i);
            }
        }
        for &i in removed.iter().rev() {
            self.warn(format!(
                "{label}: duplicate env {} removed",
                list[i].name.as_str()
            ));
            self.remove(child(&env_path, i.to_string()));
        }
        for (name, value) in wanted {
            let Some(i) = list.iter().position(|e| e.name.as_str() == *name) else {
                self.add(child(&env_path, "-"), env_entry(name, value));
                continue;
            };
            let entry = &list[i];
            let same = entry.value_from.is_none()
                && entry.value.as_ref().map(|v| v.as_str()) == Some(value.as_ref());
            if same {
                continue;
            }
            let before = match (&entry.value_from, &entry.value) {
                (Some(_), _) => "(valueFrom)".to_string(),
                (None, Some(v)) => format!("{:?}", v.as_str()),
                (None, None) => "(empty)".to_string(),
            };
            self.warn(format!(
                "{label}: env {name}={before} replaced by {value:?}"
            ));
            let shifted = i - removed.iter().filter(|&&r| r < i).count();
            self.replace(
                child(&env_path, shifted.to_string()),
                env_entry(name, value),
            );
        }
    }
}
