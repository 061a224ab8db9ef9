//! End to end through the built binary: `konsumer serve --local` on a copy of
//! examples/local, a fixture POSTed over TLS, the Consumer file edited, the next
//! answer changed; SIGTERM stops it cleanly.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

pub struct Binary {
    child: Child,
    pub webhook: SocketAddr,
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Binary {
    /// Starts `konsumer serve --local dir` on loopback ports chosen by the OS and
    /// waits for its "konsumer serving" log line (JSON logs).
    pub fn serve_local(dir: &Path, extra: &[&str]) -> Binary {
        Self::serve_local_under(&[], dir, extra)
    }

    /// The same, started through `prefix` (`prlimit --nofile=…`, say), which
    /// must exec konsumer in its own process.
    pub fn serve_local_under(prefix: &[&str], dir: &Path, extra: &[&str]) -> Binary {
        let binary = env!("CARGO_BIN_EXE_konsumer");
        let mut command = match prefix.split_first() {
            None => Command::new(binary),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(binary);
                c
            }
        };
        let mut child = command
            .args(["--log-format", "json", "serve", "--local"])
            .arg(dir)
            .args([
                "--webhook-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "konsumer serving" {
                        let _ = tx.send(v.clone());
                    }
                    kept.lock().unwrap().push(v);
                }
            }
        });
        let serving = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("konsumer did not log 'konsumer serving'");
        let addr = |k: &str| serving[k].as_str().unwrap().parse().unwrap();
        Binary {
            webhook: addr("webhook_addr"),
            admin: addr("admin_addr"),
            child,
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The JSON log lines so far.
    pub fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// The log lines as they come, readable after the process ended.
    pub fn log_lines(&self) -> Arc<Mutex<Vec<Value>>> {
        self.logs.clone()
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
    }

    /// The exit status, if the process ends within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL (no chance to clean up), then waits for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(5))
            .expect("konsumer did not stop within 5s of SIGTERM")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn copy_example(to: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local");
    for entry in std::fs::read_dir(example).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

async fn post(client: &reqwest::Client, port: u16, fixture_name: &str) -> Value {
    post_to(client, port, "/mutate/workloads", fixture_name).await
}

async fn post_to(client: &reqwest::Client, port: u16, path: &str, fixture_name: &str) -> Value {
    client
        .post(format!("https://localhost:{port}{path}"))
        .header("content-type", "application/json")
        .body(fixture_bytes(fixture_name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn local_mode_binary_answers_and_follows_edits_of_the_consumer_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let konsumer = Binary::serve_local(dir.path(), &[]);
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt"))
        .expect("CA generated on first start");
    let client = client_trusting(&ca);
    let port = konsumer.webhook.port();

    let ready = reqwest::get(format!("http://{}/readyz", konsumer.admin))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let request = fixture("pod-create-indexed-job");
    let review = post(&client, port, "pod-create-indexed-job").await;
    let pod = patched_object(&request, &review);
    assert_eq!(
        env_value(&pod["spec"]["containers"][0], "KAFKA_PARTITIONS"),
        "3,4,5"
    );
    assert_eq!(
        env_value(&pod["spec"]["containers"][0], "KONSUMERATOR_NUM_PARTITIONS"),
        "10"
    );

    // Grow the topic to 12 partitions: 4 instances of 3.
    let file = dir.path().join("orders.yaml");
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("numPartitions: 10", "numPartitions: 12");
    std::fs::write(&file, edited).unwrap();

    let mut last = String::new();
    for _ in 0..100 {
        let review = post(&client, port, "pod-create-indexed-job").await;
        let pod = patched_object(&request, &review);
        last = env_value(&pod["spec"]["containers"][0], "KONSUMERATOR_NUM_PARTITIONS");
        if last == "12" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, "12", "the edit reached the webhook");

    let logs = konsumer.log_lines();
    let status = konsumer.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    std::thread::sleep(Duration::from_millis(100));
    let lost: Vec<Value> = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("lost the reconciler lease"))
        })
        .cloned()
        .collect();
    assert!(
        lost.is_empty(),
        "stopping is not losing the lease: {lost:#?}"
    );
}

/// The request span is opened for the event that ends a request (unless spans
/// are exported): a denial's JSON log line still carries the webhook and the
/// request it answered.
#[tokio::test]
async fn a_denial_is_logged_in_its_requests_span() {
    let dir = tempfile::tempdir().unwrap();
    copy_example(dir.path());
    let konsumer = Binary::serve_local(dir.path(), &[]);
    let ca = std::fs::read(dir.path().join(".konsumer/tls/ca.crt")).unwrap();
    let client = client_trusting(&ca);
    let port = konsumer.webhook.port();
    let cases = [
        (
            "/mutate/workloads",
            "deployment-create-instance-out-of-range",
            "mutate_workloads",
        ),
        (
            "/validate/consumers",
            "consumer-invalid-policy.validate",
            "validate_consumers",
        ),
    ];
    for (path, name, webhook) in cases {
        let review = post_to(&client, port, path, name).await;
        assert_eq!(review["response"]["allowed"], false, "{name}: {review:#}");
        let uid = fixture(name)["request"]["uid"].clone();
        let mut line = None;
        for _ in 0..100 {
            line = konsumer
                .logs()
                .into_iter()
                .find(|l| l["level"] == "INFO" && l["span"]["uid"] == uid);
            if line.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let line =
            line.unwrap_or_else(|| panic!("no denial logged for {uid}: {:#?}", konsumer.logs()));
        assert_eq!(line["span"]["webhook"], webhook, "{line:#}");
        if webhook == "mutate_workloads" {
            // The object's name is not shadowed by the span's own name.
            assert_eq!(line["span"]["object_name"], "orders-7", "{line:#}");
        }
        assert!(
            line["target"]
                .as_str()
                .unwrap()
                .starts_with("konsumer::admission"),
            "{line:#}"
        );
    }
}

#[test]
fn kube_mode_without_certificates_refuses_to_start_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_konsumer"))
        .args([
            "serve",
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .env_remove("KONSUMER_TLS_CERT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tls-cert and --tls-key are required in kube mode"),
        "{stderr}"
    );
}

#[test]
fn plan_prints_every_instance_of_the_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local/orders.yaml");
    let plans = konsumer_json(&[
        "plan".as_ref(),
        "--offline".as_ref(),
        "-o".as_ref(),
        "json".as_ref(),
        "-f".as_ref(),
        example.as_os_str(),
    ]);
    let instances = plans[0]["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 4);
    assert_eq!(instances[3]["partitions"], serde_json::json!([8, 9]));
    assert_eq!(
        instances[3]["containers"][0]["env"]["KAFKA_PARTITIONS"],
        "8,9"
    );
}
