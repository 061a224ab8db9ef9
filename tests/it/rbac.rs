//! konsumer's RBAC, derived from the calls it makes.
//!
//! [`TABLE`] says, for every permission the manifests grant, which code makes the
//! call and which feature needs it. The tests hold the rendered manifests to the
//! table in both directions (no rule without a call, no call without a rule), and
//! the mocked apiserver ([`crate::fake_apiserver`]) enforces the rules of
//! `manifests/base/rbac.yaml` on every request of every kube-mode test, answering
//! what the real RBAC authorizer answers (403 before 404), so a call added later
//! without its rule fails the test that makes it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

/// Where a role applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// A ClusterRole bound by a ClusterRoleBinding: every namespace.
    Cluster,
    /// A Role bound in konsumer's own namespace.
    OwnNamespace,
    /// A ClusterRole the operator binds per namespace (RoleBinding).
    BoundPerNamespace,
}

/// Which feature needs a permission (the ones not built yet are marked for the
/// merge that brings them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// In the code today.
    Built,
    /// The HTTP API's authentication and authorization (issue 9).
    Api,
}

pub struct Grant {
    pub scope: Scope,
    /// The ClusterRole or Role that grants it.
    pub role: &'static str,
    pub group: &'static str,
    /// `resource` or `resource/subresource`.
    pub resource: &'static str,
    pub verb: &'static str,
    pub feature: Feature,
    /// The code that makes the call.
    pub calls: &'static str,
}

const fn g(
    scope: Scope,
    role: &'static str,
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    feature: Feature,
    calls: &'static str,
) -> Grant {
    Grant {
        scope,
        role,
        group,
        resource,
        verb,
        feature,
        calls,
    }
}

use Feature::*;
use Scope::*;

pub const TABLE: &[Grant] = &[
    g(
        Cluster,
        "konsumer",
        "konsumerator.lwolf.org",
        "consumers",
        "get",
        Built,
        "store::kube::KubeStore::get (a webhook cache miss reads the Consumer once)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumerator.lwolf.org",
        "consumers",
        "list",
        Built,
        "store::kube::KubeStore::spawn_watch (watcher's initial list)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumerator.lwolf.org",
        "consumers",
        "watch",
        Built,
        "store::kube::KubeStore::spawn_watch",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumerator.lwolf.org",
        "consumers/status",
        "patch",
        Built,
        "store::kube::KubeStore::write_status (server-side apply, field manager konsumer)",
    ),
    g(
        Cluster,
        "konsumer",
        "apps",
        "deployments",
        "list",
        Built,
        "reconciler::workloads::KubeWorkloads (status counters); reconciler::deployments::KubeDeployments::list (managed Deployments, label controller)",
    ),
    g(
        Cluster,
        "konsumer",
        "apps",
        "deployments",
        "get",
        Built,
        "reconciler::deployments::KubeDeployments::get (a name is checked before a managed Deployment is created)",
    ),
    g(
        Cluster,
        "konsumer",
        "apps",
        "deployments",
        "create",
        Built,
        "reconciler::deployments::KubeDeployments::apply (a server-side apply that creates needs create)",
    ),
    g(
        Cluster,
        "konsumer",
        "apps",
        "deployments",
        "patch",
        Built,
        "reconciler::deployments::KubeDeployments::apply (roll to the recommendation, server-side apply, forced)",
    ),
    g(
        Cluster,
        "konsumer",
        "apps",
        "deployments",
        "delete",
        Built,
        "reconciler::deployments::KubeDeployments::delete (instances beyond the count)",
    ),
    g(
        Cluster,
        "konsumer",
        "",
        "pods",
        "list",
        Built,
        "reconciler::workloads::KubeWorkloads (status counters, metadata only)",
    ),
    g(
        Cluster,
        "konsumer",
        "events.k8s.io",
        "events",
        "create",
        Built,
        "reconciler::events::KubeEvents (kube::runtime::events::Recorder); delivery::kube (Warning Events on a failing ScalingSubscription)",
    ),
    g(
        Cluster,
        "konsumer",
        "events.k8s.io",
        "events",
        "patch",
        Built,
        "reconciler::events::KubeEvents (the Recorder patches a repeated Event's series)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions",
        "list",
        Built,
        "delivery::kube::KubeSubscriptions::spawn_watch (watcher's initial list)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions",
        "watch",
        Built,
        "delivery::kube::KubeSubscriptions::spawn_watch",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions/status",
        "patch",
        Built,
        "delivery::kube::KubeSubscriptions (cursors and conditions: server-side apply, field manager konsumer)",
    ),
    g(
        Cluster,
        "konsumer",
        "",
        "namespaces",
        "get",
        Built,
        "delivery::kube::KubeSubscriptions (a namespace's labels, only for subscriptions in konsumer's own namespace that set namespaceSelector)",
    ),
    g(
        Cluster,
        "konsumer",
        "authentication.k8s.io",
        "tokenreviews",
        "create",
        Api,
        "the api listener authenticates bearer tokens",
    ),
    g(
        Cluster,
        "konsumer",
        "authorization.k8s.io",
        "subjectaccessreviews",
        "create",
        Api,
        "the api listener authorizes callers against RBAC",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions",
        "get",
        Api,
        "http_api::objects::KubeObjects (GET, PUT, DELETE and rotate-secret read the subscription)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions",
        "create",
        Api,
        "http_api::objects::KubeObjects::create (POST …/subscriptions)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions",
        "update",
        Api,
        "http_api::objects::KubeObjects::replace (PUT …/subscriptions/{name}; rotate-secret's grace annotation)",
    ),
    g(
        Cluster,
        "konsumer",
        "konsumer.dev",
        "scalingsubscriptions",
        "delete",
        Api,
        "http_api::objects::KubeObjects::delete (DELETE …/subscriptions/{name}; its Secret goes by owner reference)",
    ),
    g(
        OwnNamespace,
        "konsumer-leader-election",
        "coordination.k8s.io",
        "leases",
        "get",
        Built,
        "reconciler::leader (kube-lease-manager reads the Lease)",
    ),
    g(
        OwnNamespace,
        "konsumer-leader-election",
        "coordination.k8s.io",
        "leases",
        "create",
        Built,
        "reconciler::leader (the first replica creates the Lease)",
    ),
    g(
        OwnNamespace,
        "konsumer-leader-election",
        "coordination.k8s.io",
        "leases",
        "patch",
        Built,
        "reconciler::leader (acquire, renew, release)",
    ),
    g(
        BoundPerNamespace,
        "konsumer-secret-reader",
        "",
        "secrets",
        "get",
        Built,
        "delivery::kube::KubeSubscriptions (the signing Secret and private CA a ScalingSubscription names, read by name in its own namespace)",
    ),
    g(
        BoundPerNamespace,
        "konsumer-secret-writer",
        "",
        "secrets",
        "get",
        Api,
        "http_api::objects::KubeObjects (rotate-secret reads the Secret the api made, checks its owner)",
    ),
    g(
        BoundPerNamespace,
        "konsumer-secret-writer",
        "",
        "secrets",
        "create",
        Api,
        "http_api::objects::KubeObjects::create (the signing Secret of a subscription made through the api, owned by it)",
    ),
    g(
        BoundPerNamespace,
        "konsumer-secret-writer",
        "",
        "secrets",
        "update",
        Api,
        "http_api::objects::KubeObjects::write_secret (rotate-secret, and retiring old secrets after the grace)",
    ),
];

/// Guest mode (`serve --guest --namespace NS`, `manifests/guest/rbac.yaml`): one
/// Role in its namespace, nothing cluster-wide.
pub const GUEST_TABLE: &[Grant] = &[
    g(
        OwnNamespace,
        "konsumer-guest",
        "",
        "configmaps",
        "get",
        Built,
        "store::guest::GuestStore::get (a webhook cache miss reads the ConfigMap once)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "",
        "configmaps",
        "list",
        Built,
        "store::guest::GuestStore (watcher's initial list)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "",
        "configmaps",
        "watch",
        Built,
        "store::guest::GuestStore (watcher)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "",
        "configmaps",
        "patch",
        Built,
        "store::guest::GuestStore (status annotations, spec problems: JSON merge patch)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "apps",
        "deployments",
        "get",
        Built,
        "reconciler::deployments::KubeDeployments::get",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "apps",
        "deployments",
        "list",
        Built,
        "reconciler::workloads::KubeWorkloads; reconciler::deployments::KubeDeployments::list",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "apps",
        "deployments",
        "create",
        Built,
        "reconciler::deployments::KubeDeployments::apply (an apply that creates)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "apps",
        "deployments",
        "patch",
        Built,
        "reconciler::deployments::KubeDeployments::apply",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "apps",
        "deployments",
        "delete",
        Built,
        "reconciler::deployments::KubeDeployments::delete",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "",
        "pods",
        "list",
        Built,
        "reconciler::workloads::KubeWorkloads (status counters, metadata only)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "events.k8s.io",
        "events",
        "create",
        Built,
        "reconciler::events::KubeEvents (Events on the ConfigMaps)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "events.k8s.io",
        "events",
        "patch",
        Built,
        "reconciler::events::KubeEvents (a repeated Event's series)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "coordination.k8s.io",
        "leases",
        "get",
        Built,
        "reconciler::leader (the Lease lives in the guest namespace)",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "coordination.k8s.io",
        "leases",
        "create",
        Built,
        "reconciler::leader",
    ),
    g(
        OwnNamespace,
        "konsumer-guest",
        "coordination.k8s.io",
        "leases",
        "patch",
        Built,
        "reconciler::leader",
    ),
];

/// One permission: (scope, role, group, resource, verb).
pub type Permission = (Scope, String, String, String, String);

fn permissions_of(table: &[Grant]) -> BTreeSet<Permission> {
    table
        .iter()
        .map(|g| {
            (
                g.scope,
                g.role.to_string(),
                g.group.to_string(),
                g.resource.to_string(),
                g.verb.to_string(),
            )
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A policy rule of a Role or ClusterRole.
#[derive(Clone, Debug)]
pub struct Rule {
    pub groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub names: Vec<String>,
}

impl Rule {
    fn from(v: &Value) -> Rule {
        Rule {
            groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            verbs: strings(&v["verbs"]),
            names: strings(&v["resourceNames"]),
        }
    }

    fn allows(&self, a: &Attributes) -> bool {
        let any = |list: &[String], x: &str| list.iter().any(|s| s == "*" || s == x);
        any(&self.groups, &a.group)
            && any(&self.resources, &a.resource)
            && any(&self.verbs, &a.verb)
            && (self.names.is_empty() || a.name.as_ref().is_some_and(|n| self.names.contains(n)))
    }
}

/// What the RBAC authorizer sees of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The request attributes of an API path, as the apiserver derives them.
pub fn attributes(method: &str, path: &str, query: &str) -> Option<Attributes> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, more @ ..] => (Some(ns.to_string()), {
            let mut r = vec![*resource];
            r.extend(more);
            r
        }),
        other => (None, other.to_vec()),
    };
    let (resource, name, sub) = match rest.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    let watching = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method, &name) {
        ("GET", _) if watching => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return None,
    };
    Some(Attributes {
        verb: verb.into(),
        group: group.into(),
        resource: match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource.to_string(),
        },
        namespace,
        name,
    })
}

/// The RBAC of a set of manifests, for the ServiceAccount `konsumer`.
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    /// Rules bound cluster-wide.
    cluster: Vec<Rule>,
    /// Rules bound in one namespace.
    namespaced: Vec<(String, Rule)>,
    /// Every ClusterRole, bound or not (an operator may bind one per namespace).
    cluster_roles: Vec<(String, Vec<Rule>)>,
}

impl Rbac {
    /// From the documents of a manifest set (rendered or raw).
    pub fn from_documents(docs: &[Value]) -> Rbac {
        let kind = |d: &Value| d["kind"].as_str().unwrap_or("").to_string();
        let name = |d: &Value| d["metadata"]["name"].as_str().unwrap_or("").to_string();
        let rules_of = |role_kind: &str, role_name: &str, ns: Option<&str>| -> Vec<Rule> {
            docs.iter()
                .filter(|d| kind(d) == role_kind && name(d) == role_name)
                .filter(|d| role_kind == "ClusterRole" || d["metadata"]["namespace"].as_str() == ns)
                .flat_map(|d| {
                    d["rules"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(Rule::from)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let binds_konsumer = |d: &Value| {
            d["subjects"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["kind"] == "ServiceAccount" && s["name"] == "konsumer")
            })
        };
        let mut rbac = Rbac::default();
        for d in docs {
            match kind(d).as_str() {
                "ClusterRoleBinding" if binds_konsumer(d) => {
                    let role = d["roleRef"]["name"].as_str().unwrap_or("");
                    rbac.cluster.extend(rules_of("ClusterRole", role, None));
                }
                "RoleBinding" if binds_konsumer(d) => {
                    let ns = d["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    let role_kind = d["roleRef"]["kind"].as_str().unwrap_or("");
                    let role = d["roleRef"]["name"].as_str().unwrap_or("");
                    for r in rules_of(role_kind, role, Some(&ns)) {
                        rbac.namespaced.push((ns.clone(), r));
                    }
                }
                "ClusterRole" => rbac
                    .cluster_roles
                    .push((name(d), rules_of("ClusterRole", &name(d), None))),
                _ => {}
            }
        }
        rbac
    }

    /// `manifests/base/rbac.yaml`, as the mocked apiserver enforces it.
    pub fn base() -> Rbac {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/rbac.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        Rbac::from_documents(&docs)
    }

    /// `manifests/guest/rbac.yaml` rendered into `namespace` (what kustomize's
    /// `namespace:` does), as the mocked apiserver enforces it in guest mode.
    pub fn guest(namespace: &str) -> Rbac {
        Rbac::from_documents(&guest_documents(namespace))
    }

    /// What the operator does for a namespace (docs/operations.md): a RoleBinding
    /// of ClusterRole `role` in `namespace`.
    pub fn bind_in_namespace(&mut self, namespace: &str, role: &str) {
        let rules = self
            .cluster_roles
            .iter()
            .find(|(n, _)| n == role)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no ClusterRole {role} in the manifests"));
        for r in rules {
            self.namespaced.push((namespace.to_string(), r));
        }
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        self.cluster.iter().any(|r| r.allows(a))
            || a.namespace
                .as_ref()
                .is_some_and(|ns| self.namespaced.iter().any(|(n, r)| n == ns && r.allows(a)))
    }

    /// Every (scope, role, group, resource, verb) the documents grant konsumer.
    pub fn permissions(docs: &[Value]) -> BTreeSet<Permission> {
        let mut out = BTreeSet::new();
        let bound = |d: &Value, kind: &str| {
            docs.iter().any(|b| {
                b["kind"] == kind
                    && b["roleRef"]["name"] == d["metadata"]["name"]
                    && b["roleRef"]["kind"] == d["kind"]
                    && b["subjects"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s["name"] == "konsumer"))
            })
        };
        for d in docs {
            let scope = match d["kind"].as_str() {
                Some("ClusterRole") if bound(d, "ClusterRoleBinding") => Cluster,
                Some("ClusterRole") => BoundPerNamespace,
                Some("Role") if bound(d, "RoleBinding") => OwnNamespace,
                Some("Role") => panic!("Role {} is bound to nobody", d["metadata"]["name"]),
                _ => continue,
            };
            let role = d["metadata"]["name"].as_str().unwrap_or("").to_string();
            for r in d["rules"].as_array().cloned().unwrap_or_default() {
                let r = Rule::from(&r);
                assert!(r.names.is_empty(), "resourceNames are not in the table yet");
                for group in &r.groups {
                    for resource in &r.resources {
                        for verb in &r.verbs {
                            out.insert((
                                scope,
                                role.clone(),
                                group.clone(),
                                resource.clone(),
                                verb.clone(),
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

/// The apiserver's 403 for a request RBAC does not allow (as recorded in
/// `05-secrets-get-forbidden-403.json` and `09-deployments-create-forbidden-403.json`).
pub fn forbidden(a: &Attributes, user: &str) -> Value {
    let qualified = if a.group.is_empty() {
        a.resource.split('/').next().unwrap_or("").to_string()
    } else {
        format!("{}.{}", a.resource.split('/').next().unwrap_or(""), a.group)
    };
    let subject = match &a.name {
        Some(n) => format!("{qualified} {n:?}"),
        None => qualified,
    };
    let place = match &a.namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".into(),
    };
    let mut details = json!({ "kind": a.resource.split('/').next().unwrap_or("") });
    if let Some(n) = &a.name {
        details["name"] = json!(n);
    }
    if !a.group.is_empty() {
        details["group"] = json!(a.group);
    }
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure",
        "message": format!(
            "{subject} is forbidden: User {user:?} cannot {} resource {:?} in API group {:?} {place}",
            a.verb, a.resource, a.group
        ),
        "reason": "Forbidden",
        "details": details,
        "code": 403
    })
}

#[test]
fn request_attributes_are_derived_as_the_apiserver_does() {
    let a = |m, p, q| attributes(m, p, q).unwrap();
    assert_eq!(
        a(
            "GET",
            "/apis/konsumerator.lwolf.org/v1/consumers",
            "watch=true&resourceVersion=5"
        ),
        Attributes {
            verb: "watch".into(),
            group: "konsumerator.lwolf.org".into(),
            resource: "consumers".into(),
            namespace: None,
            name: None
        }
    );
    let status = a(
        "PATCH",
        "/apis/konsumerator.lwolf.org/v1/namespaces/s/consumers/orders/status",
        "fieldManager=konsumer&force=true",
    );
    assert_eq!(
        (
            status.verb.as_str(),
            status.resource.as_str(),
            status.namespace.as_deref()
        ),
        ("patch", "consumers/status", Some("s"))
    );
    let pods = a("GET", "/api/v1/pods", "labelSelector=x");
    assert_eq!((pods.verb.as_str(), pods.group.as_str()), ("list", ""));
    let secret = a("GET", "/api/v1/namespaces/t/secrets/hook", "");
    assert_eq!(
        (secret.verb.as_str(), secret.name.as_deref()),
        ("get", Some("hook"))
    );
    assert_eq!(
        a(
            "POST",
            "/apis/coordination.k8s.io/v1/namespaces/k/leases",
            ""
        )
        .verb,
        "create"
    );
    assert_eq!(
        a("DELETE", "/apis/apps/v1/namespaces/k/deployments", "").verb,
        "deletecollection"
    );
}

#[test]
fn the_forbidden_answer_has_the_recorded_shape() {
    let recorded: Value = serde_json::from_str(include_str!(
        "../fixtures/apiserver/09-deployments-create-forbidden-403.json"
    ))
    .unwrap();
    let exchange = recorded["exchanges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["response"]["status"] == 403 && e["request"]["method"] == "PATCH")
        .unwrap();
    let req = &exchange["request"];
    let (path, query) = req["path"].as_str().unwrap().split_once('?').unwrap();
    let a = attributes("PATCH", path, query).unwrap();
    assert_eq!(
        forbidden(&a, "system:serviceaccount:cap-k:cap-lister"),
        exchange["response"]["body"]
    );
}

#[test]
fn the_mocked_apiserver_enforces_exactly_the_base_rules() {
    let rbac = Rbac::base();
    let a = |m, p| attributes(m, p, "").unwrap();
    assert!(rbac.allows(&a(
        "GET",
        "/apis/konsumerator.lwolf.org/v1/namespaces/x/consumers/c"
    )));
    assert!(rbac.allows(&a(
        "GET",
        "/apis/coordination.k8s.io/v1/namespaces/konsumer-system/leases/konsumer-leader"
    )));
    assert!(
        !rbac.allows(&a(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/default/leases/l"
        )),
        "Leases only in konsumer's own namespace"
    );
    assert!(!rbac.allows(&a(
        "DELETE",
        "/apis/konsumerator.lwolf.org/v1/namespaces/x/consumers/c"
    )));
    assert!(!rbac.allows(&a(
        "PATCH",
        "/apis/konsumerator.lwolf.org/v1/namespaces/x/consumers/c"
    )));
    let secret = a("GET", "/api/v1/namespaces/team/secrets/hook");
    assert!(
        !rbac.allows(&secret),
        "Secrets only where the operator binds them"
    );
    let mut bound = rbac.clone();
    bound.bind_in_namespace("team", "konsumer-secret-reader");
    assert!(bound.allows(&secret));
    assert!(!bound.allows(&a("GET", "/api/v1/namespaces/other/secrets/hook")));
}

#[test]
fn every_rule_in_the_base_manifests_is_in_the_table_and_every_table_row_is_a_rule() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base/rbac.yaml");
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_permissions_match_the_table(&Rbac::permissions(&docs), "manifests/base/rbac.yaml");
}

fn guest_documents(namespace: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/guest/rbac.yaml");
    let mut docs: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    for d in &mut docs {
        d["metadata"]["namespace"] = json!(namespace);
        if let Some(subjects) = d["subjects"].as_array_mut() {
            for s in subjects {
                s["namespace"] = json!(namespace);
            }
        }
    }
    docs
}

#[test]
fn every_rule_of_guest_mode_is_in_the_guest_table_and_nothing_is_cluster_wide() {
    let docs = guest_documents("team-a");
    assert!(
        docs.iter().all(|d| !matches!(
            d["kind"].as_str(),
            Some("ClusterRole" | "ClusterRoleBinding")
        )),
        "guest mode runs without cluster-wide permissions"
    );
    assert_table_matches(
        GUEST_TABLE,
        &Rbac::permissions(&docs),
        "manifests/guest/rbac.yaml",
    );
    let rbac = Rbac::guest("team-a");
    let a = |m, p| attributes(m, p, "").unwrap();
    assert!(rbac.allows(&a("GET", "/api/v1/namespaces/team-a/configmaps/orders")));
    assert!(!rbac.allows(&a("GET", "/api/v1/namespaces/team-b/configmaps/orders")));
    assert!(!rbac.allows(&a(
        "GET",
        "/apis/konsumerator.lwolf.org/v1/namespaces/team-a/consumers/c"
    )));
}

/// Both directions, with the difference spelled out.
pub fn assert_permissions_match_the_table(granted: &BTreeSet<Permission>, what: &str) {
    assert_table_matches(TABLE, granted, what);
}

fn assert_table_matches(rows: &[Grant], granted: &BTreeSet<Permission>, what: &str) {
    let table = permissions_of(rows);
    let unneeded: Vec<_> = granted.difference(&table).collect();
    let missing: Vec<_> = table.difference(granted).collect();
    assert!(
        unneeded.is_empty() && missing.is_empty(),
        "{what}: granted but in no row of tests/it/rbac.rs TABLE (remove the rule, or add the call that needs it): \
         {unneeded:#?}\nin the table but not granted: {missing:#?}"
    );
    assert_eq!(rows.len(), table.len(), "a duplicate row in the table");
}

/// The table as Markdown, as `manifests/README.md` shows it.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| scope | role | API group | resource | verb | needed by | call |\n|---|---|---|---|---|---|---|\n",
    );
    for g in TABLE {
        let scope = match g.scope {
            Cluster => "cluster",
            OwnNamespace => "konsumer's namespace",
            BoundPerNamespace => "namespaces you bind",
        };
        let feature = match g.feature {
            Built => "konsumer today",
            Api => "HTTP API (issue 9)",
        };
        let group = if g.group.is_empty() { "\"\"" } else { g.group };
        out.push_str(&format!(
            "| {scope} | `{}` | `{group}` | `{}` | {} | {feature} | {} |\n",
            g.role, g.resource, g.verb, g.calls
        ));
    }
    out
}

#[test]
fn the_manifests_readme_shows_the_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let table = markdown_table();
    assert!(
        readme.contains(&table),
        "manifests/README.md does not show tests/it/rbac.rs TABLE; replace its RBAC table with:\n{table}"
    );
}

#[tokio::test]
async fn a_call_the_rbac_does_not_allow_gets_the_apiservers_403_before_any_404() {
    use k8s_openapi::api::core::v1::Secret;
    let (client, fake) = crate::fake_apiserver::FakeApiServer::start();
    fake.expect_forbidden();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "team");
    match secrets.get("does-not-exist").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert_eq!(status.reason, "Forbidden");
            assert!(
                status.message.contains("cannot get resource \"secrets\""),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(fake.forbidden().len(), 1);
    // Once the operator binds the reader in that namespace, RBAC lets it through.
    fake.bind_in_namespace("team", "konsumer-secret-reader");
    match secrets.get("does-not-exist").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 404),
        other => panic!("expected a 404, got {other:?}"),
    }
    assert_eq!(fake.forbidden().len(), 1);
}

#[tokio::test]
async fn a_forbidden_call_fails_the_test_even_when_the_code_shrugs_it_off() {
    use k8s_openapi::api::core::v1::Secret;
    let (client, fake) = crate::fake_apiserver::FakeApiServer::start();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, "team");
    let _ = secrets.get("hook").await;
    // The request's own task may still hold the fake for a moment.
    for _ in 0..100 {
        if Arc::strong_count(&fake) == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(fake)));
    let message = dropped.expect_err("dropping the fake fails the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("GET /api/v1/namespaces/team/secrets/hook"),
        "{message}"
    );
}
