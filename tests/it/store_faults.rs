//! Faults of the local store and of input: a disk that fills up (a real tmpfs)
//! and empties again, a removed Consumer file whose definition lives on in
//! another, and inputs that never end or are far too large.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use konsumer::api::{ConsumerStatus, InstanceStatus};
use konsumer::config::ServeConfig;
use konsumer::server::{self, Backend};
use konsumer::store::{ConsumerIndex, Store};

use crate::support::*;

/// A tmpfs of `size` mounted on a new temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs to fill it up, which needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes 64 KiB blocks to `path` until the filesystem is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let block = vec![1u8; 64 << 10];
    for _ in 0..100_000 {
        if f.write_all(&block).and_then(|()| f.sync_data()).is_err() {
            return;
        }
    }
    panic!("the tmpfs never filled up");
}

/// A status of about `kib` KiB.
fn status_of(kib: usize, marker: i32) -> ConsumerStatus {
    ConsumerStatus {
        expected: Some(marker),
        instances: Some(
            (0..kib * 8)
                .map(|id| InstanceStatus {
                    id: id as i32,
                    partitions: vec![id as i32; 16],
                    ..InstanceStatus::default()
                })
                .collect(),
        ),
        ..ConsumerStatus::default()
    }
}

async fn get(url: String) -> (u16, String) {
    let resp = reqwest::get(url).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn a_full_disk_fails_readiness_and_the_store_recovers_when_space_returns() {
    let disk = Tmpfs::mount("6m");
    std::fs::write(disk.path().join("orders.yaml"), orders_yaml()).unwrap();
    let config = ServeConfig::local_for_tests(disk.path().to_path_buf());
    let index = ConsumerIndex::new();
    let backend = server::backend(&config, index.clone()).await.unwrap();
    let Backend::Local(store) = &backend else {
        unreachable!()
    };
    let store = store.clone();
    let running = server::start(config, index.clone(), backend).await.unwrap();
    let admin = format!("http://{}", running.admin_addr);
    store
        .write_status("streams", "orders", &status_of(4, 1))
        .await
        .unwrap();
    assert_eq!(get(format!("{admin}/readyz")).await.0, 200);

    let filler = disk.path().join("filler");
    fill(&filler);
    let err = store
        .write_status("streams", "orders", &status_of(1024, 2))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("No space left on device"), "{err}");
    let (code, body) = get(format!("{admin}/readyz")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("status cannot be written"), "{body}");
    let metrics = get(format!("{admin}/metrics")).await.1;
    assert!(metrics.contains("konsumer_store_writable 0"), "{metrics}");
    // Still full: still failing, and still saying why.
    assert!(
        store
            .write_status("streams", "orders", &status_of(1024, 3))
            .await
            .is_err()
    );

    std::fs::remove_file(&filler).unwrap();
    store
        .write_status("streams", "orders", &status_of(1024, 4))
        .await
        .expect("the store writes again once space returns");
    assert_eq!(get(format!("{admin}/readyz")).await.0, 200);
    let metrics = get(format!("{admin}/metrics")).await.1;
    assert!(metrics.contains("konsumer_store_writable 1"), "{metrics}");
    running.stop().await;
    drop(store);

    // What was written after the recovery is what a restart reads.
    let index = ConsumerIndex::new();
    let store = konsumer::store::local::LocalStore::open(disk.path(), index.clone()).unwrap();
    store.rescan().await.unwrap();
    let cached = index.get("streams", "orders").unwrap();
    assert_eq!(cached.consumer.status.as_ref().unwrap().expected, Some(4));
    drop(store);
}

#[tokio::test]
async fn removing_the_winning_file_serves_the_other_definition_at_once() {
    let orders = orders_yaml();
    let twelve = orders.replace("numPartitions: 10", "numPartitions: 12");
    let s = LocalServer::start(&[("a.yaml", &orders), ("b.yaml", &twelve)]).await;
    let num_partitions = |review: &serde_json::Value| {
        let pod = patched_object(&fixture("pod-create-indexed-job"), review);
        env_value(&pod["spec"]["containers"][0], "KONSUMERATOR_NUM_PARTITIONS")
    };
    let (_, review) = s
        .post("/mutate/workloads", fixture_bytes("pod-create-indexed-job"))
        .await;
    assert_eq!(num_partitions(&review), "10");
    let dir = s.dir().to_path_buf();
    std::fs::remove_file(dir.join("a.yaml")).unwrap();
    let started = Instant::now();
    loop {
        let (_, review) = s
            .post("/mutate/workloads", fixture_bytes("pod-create-indexed-job"))
            .await;
        if num_partitions(&review) == "12" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still answered from the removed file after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await;
}

fn konsumer(args: &[&str], stdin: Option<&Path>) -> (std::process::ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_konsumer"));
    cmd.args(args);
    if let Some(path) = stdin {
        cmd.stdin(std::fs::File::open(path).unwrap());
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text, started.elapsed())
}

#[test]
fn endless_and_oversized_inputs_stop_at_the_cap_fast() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let big = big.to_str().unwrap();
    for (args, stdin) in [
        (vec!["validate", "-f", "/dev/zero"], None),
        (vec!["validate", "-f", "-"], Some(Path::new("/dev/zero"))),
        (vec!["plan", "--offline", "-f", "/dev/zero"], None),
        (vec!["validate", "-f", big], None),
        (vec!["plan", "--offline", "-f", big], None),
    ] {
        let (status, text, took) = konsumer(&args, stdin);
        assert!(!status.success(), "{args:?}: {text}");
        assert!(
            text.contains("over konsumer's limit of 8388608 bytes (8 MiB)"),
            "{args:?}: {text}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
    }
}

#[test]
fn a_fifo_named_yaml_in_the_local_directory_does_not_block_the_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("orders.yaml"), orders_yaml()).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(dir.path().join("stuck.yaml"))
            .status()
            .unwrap()
            .success()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let index = ConsumerIndex::new();
        let store =
            Arc::new(konsumer::store::local::LocalStore::open(dir.path(), index.clone()).unwrap());
        let n = tokio::time::timeout(Duration::from_secs(5), store.rescan())
            .await
            .expect("the rescan does not wait on the FIFO")
            .unwrap();
        assert_eq!(n, 1);
    });
}
