//! The JSON Patch (RFC 6902) that gives a pod spec its partitions, runtime hints and
//! resources. Parents are added before children, keys are escaped by the pointer
//! type, entries are replaced in place (never duplicated), and an object that
//! already has everything gets no operation at all.

use std::borrow::Cow;
use std::fmt;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value};

use crate::api::{env, keys};

pub(crate) mod text;

pub use text::PatchText;

use super::hints;
use super::partition;
use super::settings::{ContainerTarget, InstancePlan, ResourceSource, Resources};
use super::workload::{Container, Containers, Meta, Selected};

/// The operations and the warnings for the user (one per value replaced). `O` is
/// where the operations go: json-patch's types by default (for callers that apply
/// the patch), or [`PatchText`], the patch written straight as the webhook sends it.
#[derive(Debug, Default)]
pub struct Mutation<O = Vec<PatchOperation>> {
    pub ops: O,
    pub warnings: Vec<String>,
}

/// What an operation sets, borrowed from the decision: built into a
/// `serde_json::Value` or written as JSON text, one shape for both.
#[derive(Clone, Copy, Debug)]
pub enum Val<'a> {
    Str(&'a str),
    /// An object of strings (keys in any order: written sorted, as serde_json's map).
    Strings(&'a [(&'a str, &'a str)]),
    /// `{"annotations": {...}}`.
    Annotations(&'a [(&'a str, &'a str)]),
    /// `{"name": ..., "value": ...}`.
    Env(&'a str, &'a str),
    /// A list of env entries.
    EnvList(&'a [(&'a str, Cow<'a, str>)]),
    /// `{"cpu": ..., "memory": ...}`, the ones that are set.
    Resources(&'a Resources),
    /// `{"limits": ..., "requests": ...}`, the sides that are not empty.
    Sides {
        requests: &'a Resources,
        limits: &'a Resources,
    },
}

impl Val<'_> {
    /// The value as serde_json builds it (maps sorted by key).
    pub fn to_value(self) -> Value {
        let strings = |pairs: &[(&str, &str)]| {
            Value::Object(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), Value::String((*v).to_string())))
                    .collect(),
            )
        };
        match self {
            Val::Str(s) => Value::String(s.to_string()),
            Val::Strings(pairs) => strings(pairs),
            Val::Annotations(pairs) => {
                let mut m = Map::new();
                m.insert("annotations".into(), strings(pairs));
                Value::Object(m)
            }
            Val::Env(name, value) => env_entry(name, value),
            Val::EnvList(list) => Value::Array(list.iter().map(|(n, v)| env_entry(n, v)).collect()),
            Val::Resources(r) => resource_object(r),
            Val::Sides { requests, limits } => {
                let mut m = Map::new();
                for (name, want) in [("requests", requests), ("limits", limits)] {
                    if !want.is_empty() {
                        m.insert(name.into(), resource_object(want));
                    }
                }
                Value::Object(m)
            }
        }
    }
}

/// The three operations konsumer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

/// Where a patch's operations go. `path` is an encoded JSON Pointer (`/a/b~1c`).
pub trait Ops: Default {
    fn push(&mut self, op: Op, path: &str, value: Option<Val<'_>>);
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Ops for Vec<PatchOperation> {
    fn push(&mut self, op: Op, path: &str, value: Option<Val<'_>>) {
        // Every token was encoded by `Path::push`, so this always parses.
        let path = PointerBuf::parse(path).unwrap_or_else(|_| {
            PointerBuf::from_tokens(
                path.split('/')
                    .skip(1)
                    .map(|t| t.replace("~1", "/").replace("~0", "~")),
            )
        });
        let value = value.map_or(Value::Null, Val::to_value);
        Vec::push(
            self,
            match op {
                Op::Add => PatchOperation::Add(AddOperation { path, value }),
                Op::Replace => PatchOperation::Replace(ReplaceOperation { path, value }),
                Op::Remove => PatchOperation::Remove(RemoveOperation { path }),
            },
        );
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
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
    pod_into(meta, spec, inj)
}

/// [`pod`] with the operations written into `O`.
pub fn pod_into<O: Ops>(
    meta: Option<&Meta<'_>>,
    spec: Option<Containers<'_, '_>>,
    inj: &Injection<'_>,
) -> Mutation<O> {
    let mut b = Builder::default();
    b.at(&["metadata"], |b| b.annotations(meta, inj));
    if let Some(spec) = spec {
        b.at(&["spec"], |b| b.pod_spec(spec, inj));
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
    deployment_into(meta, template_meta, template_spec, has_template, inj)
}

/// [`deployment`] with the operations written into `O`.
pub fn deployment_into<O: Ops>(
    meta: Option<&Meta<'_>>,
    template_meta: Option<&Meta<'_>>,
    template_spec: Option<Containers<'_, '_>>,
    has_template: bool,
    inj: &Injection<'_>,
) -> Mutation<O> {
    let mut b = Builder::default();
    b.at(&["metadata"], |b| b.annotations(meta, inj));
    if has_template {
        b.at(&["spec", "template", "metadata"], |b| {
            b.annotations(template_meta, inj)
        });
        if let Some(spec) = template_spec {
            b.at(&["spec", "template", "spec"], |b| b.pod_spec(spec, inj));
        }
    }
    b.mutation
}

/// Appends `token` to the encoded JSON Pointer `path` (`~` as `~0`, `/` as `~1`).
pub(crate) fn push_token(path: &mut String, token: &str) {
    path.push('/');
    if !token.contains(['~', '/']) {
        path.push_str(token);
        return;
    }
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
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

/// The operations so far, and the pointer of the place being patched: one buffer,
/// tokens pushed on the way in and cut off on the way out.
#[derive(Default)]
struct Builder<O> {
    mutation: Mutation<O>,
    path: String,
}

impl<O: Ops> Builder<O> {
    /// Runs `f` with `tokens` appended to the current path.
    fn at<T: AsRef<str>>(&mut self, tokens: &[T], f: impl FnOnce(&mut Self)) {
        let len = self.path.len();
        for token in tokens {
            push_token(&mut self.path, token.as_ref());
        }
        f(self);
        self.path.truncate(len);
    }

    /// Runs `f` with the array index `i` appended to the current path.
    fn at_index(&mut self, i: usize, f: impl FnOnce(&mut Self)) {
        self.at(&[itoa::Buffer::new().format(i)], f);
    }

    fn add(&mut self, value: Val<'_>) {
        self.mutation.ops.push(Op::Add, &self.path, Some(value));
    }

    fn replace(&mut self, value: Val<'_>) {
        self.mutation.ops.push(Op::Replace, &self.path, Some(value));
    }

    fn remove(&mut self) {
        self.mutation.ops.push(Op::Remove, &self.path, None);
    }

    fn warn(&mut self, message: String) {
        self.mutation.warnings.push(message);
    }

    /// At a metadata object's path.
    fn annotations(&mut self, meta: Option<&Meta<'_>>, inj: &Injection<'_>) {
        let wanted = inj.annotations();
        let Some(meta) = meta else {
            self.add(Val::Annotations(&wanted));
            return;
        };
        self.at(&["annotations"], |b| {
            let Some(current) = &meta.annotations else {
                b.add(Val::Strings(&wanted));
                return;
            };
            for (key, value) in wanted {
                match current.get(key) {
                    Some(cur) if cur == value => {}
                    Some(cur) => {
                        b.warn(format!("annotation {key}={cur:?} replaced by {value:?}"));
                        b.at(&[key], |b| b.replace(Val::Str(value)));
                    }
                    None => b.at(&[key], |b| b.add(Val::Str(value))),
                }
            }
        });
    }

    /// At a pod spec's path.
    fn pod_spec(&mut self, spec: Containers<'_, '_>, inj: &Injection<'_>) {
        if let Some(init) = spec.init_containers {
            self.at(&["initContainers"], |b| {
                for (i, c) in init.iter().enumerate() {
                    // Init containers get resources only when a policy names them.
                    let target = inj.plan.targets.iter().find(|t| t.name == c.name.as_str());
                    b.at_index(i, |b| b.container(c, target, "init container", inj));
                }
            });
        }
        if let Some(containers) = spec.containers {
            self.at(&["containers"], |b| {
                for (i, c) in containers.iter().enumerate() {
                    let target = inj.plan.target_for(c.name.as_str());
                    b.at_index(i, |b| b.container(c, target, "container", inj));
                }
            });
        }
    }

    /// At a container's path.
    fn container(
        &mut self,
        c: &Container<'_>,
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
        let (requests, limits) = self.resources(c, target, label, source);
        let wanted = inj.env_for(&requests, &limits);
        self.at(&["env"], |b| b.env(c, &wanted, label));
    }

    /// Sets the target's resources (at a container's path); returns the container's
    /// final requests and limits.
    fn resources(
        &mut self,
        c: &Container<'_>,
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

        self.at(&["resources"], |b| {
            let Some(view) = view else {
                b.add(Val::Sides {
                    requests: &target.requests,
                    limits: &target.limits,
                });
                return;
            };
            for (name, current, want) in [
                ("requests", view.requests.as_ref(), &target.requests),
                ("limits", view.limits.as_ref(), &target.limits),
            ] {
                if want.is_empty() {
                    continue;
                }
                b.at(&[name], |b| {
                    let Some(current) = current else {
                        b.add(Val::Resources(want));
                        return;
                    };
                    for (key, value) in [("cpu", want.cpu), ("memory", want.memory)] {
                        let Some(value) = value else { continue };
                        let current = current.get(key);
                        if current.is_some_and(|cur| hints::lenient(Some(cur)) == Some(value)) {
                            continue;
                        }
                        // Written only when it goes into the patch.
                        let text = if key == "cpu" {
                            value.cpu_string()
                        } else {
                            value.memory_string()
                        };
                        match current {
                            Some(cur) => {
                                b.warn(format!(
                                    "{label}: resources.{name}.{key} {cur} replaced by {text} ({source})"
                                ));
                                b.at(&[key], |b| b.replace(Val::Str(&text)));
                            }
                            None => b.at(&[key], |b| b.add(Val::Str(&text))),
                        }
                    }
                });
            }
        });
        (final_requests, final_limits)
    }

    /// At a container's `env` path.
    fn env(&mut self, c: &Container<'_>, wanted: &[(&str, Cow<'_, str>)], label: Label<'_>) {
        let Some(list) = &c.env else {
            self.add(Val::EnvList(wanted));
            return;
        };
        let wanted_at = |name: &str| wanted.iter().position(|(n, _)| *n == name);
        // One pass over the list: where each injected name first appears, and its
        // later duplicates. These go first, highest index first, so that every
        // index below stays valid while they are removed.
        let mut first: Vec<Option<usize>> = vec![None; wanted.len()];
        let mut removed = Vec::new();
        for (i, e) in list.iter().enumerate() {
            if let Some(w) = wanted_at(e.name.as_str()) {
                if first[w].is_none() {
                    first[w] = Some(i);
                } else {
                    removed.push(i);
                }
            }
        }
        for &i in removed.iter().rev() {
            self.warn(format!(
                "{label}: duplicate env {} removed",
                list[i].name.as_str()
            ));
            self.at_index(i, |b| b.remove());
        }
        for (name, value) in wanted {
            let Some(i) = wanted_at(name).and_then(|w| first[w]) else {
                self.at(&["-"], |b| b.add(Val::Env(name, value)));
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
            self.at_index(shifted, |b| b.replace(Val::Env(name, value)));
        }
    }
}
