//! Delivery benchmark (run with `cargo bench --bench delivery`): 1,000 Consumers
//! in local mode, 10 ScalingSubscriptions each with its own loopback receiver.
//!
//! 1. Resync: every subscriber gets a snapshot of every Consumer (10,000 events).
//! 2. Latency: one event at a time (a journal write, as the reconciler makes it),
//!    from the status write to each receiver's handler (p50/p99 over 10
//!    subscribers × 300 writes).
//! 3. Throughput: 4 events for every Consumer written at once (40,000 deliveries):
//!    events/s and process CPU per delivered event.
//!    Baseline in the same run: a plain reqwest client POSTing bodies of the same
//!    size to the same receivers with the same concurrency (the floor: HTTP on
//!    loopback plus the receivers' own work, which both numbers include).
//! 4. Memory: the built `konsumer` binary on 1,000 Consumers whose journals are
//!    all full, 10 subscriptions of which one is down, VmRSS after 20 s; against
//!    the same binary on the same Consumers with empty journals and no subscriptions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use konsumer::api::SubscriptionStatus;
use konsumer::config::ServeConfig;
use konsumer::delivery::{DeliveryConfig, EgressConfig};
use konsumer::scaling_events::EventType;
use konsumer::scaling_events::egress::{EgressPolicy, parse_allow};
use konsumer::scaling_events::journal::{self, MAX_ENTRIES, NewEvent};
use konsumer::server;
use konsumer::store::local::LocalStore;
use konsumer::store::{ConsumerIndex, Store};
use serde_json::{Value, json};

const CONSUMERS: usize = 1000;
const SUBSCRIBERS: usize = 10;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn consumers_yaml() -> String {
    let template = include_str!("../tests/fixtures/consumer-orders.yaml");
    (0..CONSUMERS)
        .map(|i| {
            template
                .replacen("name: orders", &format!("name: c{i:04}"), 1)
                .replacen("  name: orders", &format!("  name: c{i:04}"), 1)
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn subscriptions_yaml(urls: &[String]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: feed, namespace: streams}}\nstringData: {{secret: {SECRET}}}\n"
    );
    for (i, url) in urls.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: konsumer.dev/v1alpha1\nkind: ScalingSubscription\nmetadata: {{name: sub{i}, namespace: streams}}\nspec: {{url: \"{url}\", secretRef: {{name: feed, key: secret}}}}\n"
        ));
    }
    out
}

/// An event shaped like a real scale-up (two containers, three partitions).
fn event(i: usize) -> NewEvent {
    let res = |cpu: &str| {
        json!([{"containerName": "consumer", "requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"cpu": "3", "memory": "768Mi"}},
               {"containerName": "log-shipper", "requests": {"cpu": "50m"}}])
    };
    NewEvent {
        type_: if i.is_multiple_of(2) {
            EventType::ScalePending
        } else {
            EventType::Scaled
        },
        instance: Some((i % 3) as u32),
        data: json!({
            "instance": i % 3, "partitions": [0, 1, 2], "direction": "up",
            "state": {"from": "RUNNING", "to": "PENDING_SCALE_UP"},
            "resources": {"from": res("100m"), "to": res("2300m")},
            "reason": "lag 30s ≥ tolerableLag 5s; predicted 2300m > 100m",
            "metrics": {"messagesBehind": 45000, "productionRate": 1500, "consumptionRate": 1400, "lagSeconds": 30.0}
        }),
    }
}

#[derive(Default)]
struct Seen {
    /// (subscriber, consumer, sequence) → when it arrived
    arrivals: Mutex<HashMap<(usize, String, i64), Instant>>,
    count: AtomicU64,
}

async fn receiver(index: usize, seen: Arc<Seen>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let seen = seen.clone();
        async move {
            let now = Instant::now();
            if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                let data = &v["data"];
                let consumer = data["consumer"]["name"].as_str().unwrap_or("").to_string();
                let seq = data["sequence"].as_i64().unwrap_or(-1);
                seen.arrivals
                    .lock()
                    .unwrap()
                    .insert((index, consumer, seq), now);
            }
            seen.count.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn wait_count(seen: &Seen, n: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while seen.count.load(Ordering::Relaxed) < n {
        assert!(
            started.elapsed() < within,
            "only {} of {n} deliveries",
            seen.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

fn config() -> DeliveryConfig {
    DeliveryConfig {
        egress: EgressConfig {
            policy: EgressPolicy {
                allow: vec![parse_allow("127.0.0.0/8").unwrap()],
            },
            proxy: None,
        },
        konsumer_namespace: "default".into(),
        ..DeliveryConfig::default()
    }
}

async fn in_process() {
    let seen = Arc::new(Seen::default());
    let mut urls = Vec::new();
    for i in 0..SUBSCRIBERS {
        urls.push(format!("http://{}/hook", receiver(i, seen.clone()).await));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("consumers.yaml"), consumers_yaml()).unwrap();
    std::fs::write(dir.path().join("subs.yaml"), subscriptions_yaml(&urls)).unwrap();
    let mut cfg = ServeConfig::local_for_tests(dir.path().to_path_buf());
    cfg.delivery = Some(config());
    let index = ConsumerIndex::new();
    let backend = server::backend(&cfg, index.clone()).await.unwrap();
    let running = server::start(cfg, index.clone(), backend).await.unwrap();
    let deliveries = running.deliveries.clone().unwrap();
    let store = running.store.clone();

    // 1. Resync of every Consumer to every subscriber.
    let total = (CONSUMERS * SUBSCRIBERS) as u64;
    let cpu0 = process_cpu();
    let took = wait_count(&seen, total, Duration::from_secs(300)).await;
    let cpu = process_cpu() - cpu0;
    println!(
        "| resync, {total} events | {:.0} events/s | {:.0} µs CPU/event |",
        total as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / total as f64
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let write = |name: String, n: usize, seq_from: usize| {
        let store = store.clone();
        let index = index.clone();
        async move {
            let mut status = index
                .get("streams", &name)
                .and_then(|c| c.consumer.status.clone())
                .unwrap_or_default();
            let mut j = status.journal.take().unwrap_or_default();
            journal::append(
                &mut j,
                (0..n).map(|k| event(seq_from + k)).collect(),
                jiff::Timestamp::now(),
            );
            status.journal = Some(j);
            store.write_status("streams", &name, &status).await.unwrap();
        }
    };

    // 2. Latency of single events.
    let rounds = 300;
    let mut latencies = Vec::with_capacity(rounds * SUBSCRIBERS);
    let mut after_write = Vec::with_capacity(rounds * SUBSCRIBERS);
    let mut writes = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let name = format!("c{:04}", (r * 7) % CONSUMERS);
        let seq = 1
            + (0..r)
                .filter(|x| (x * 7) % CONSUMERS == (r * 7) % CONSUMERS)
                .count() as i64;
        let before = seen.count.load(Ordering::Relaxed);
        let written = Instant::now();
        write(name.clone(), 1, r).await;
        let committed = Instant::now();
        writes.push(committed.duration_since(written));
        deliveries.wake();
        wait_count(&seen, before + SUBSCRIBERS as u64, Duration::from_secs(30)).await;
        {
            let arrivals = seen.arrivals.lock().unwrap();
            for s in 0..SUBSCRIBERS {
                if let Some(at) = arrivals.get(&(s, name.clone(), seq)) {
                    latencies.push(at.duration_since(written));
                    after_write.push(at.duration_since(committed));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    latencies.sort();
    after_write.sort();
    writes.sort();
    println!(
        "| status write alone (redb commit), {} writes | p50 {} | p99 {} |",
        writes.len(),
        ms(percentile(&writes, 0.5)),
        ms(percentile(&writes, 0.99))
    );
    println!(
        "| written status → receiver, {} deliveries | p50 {} | p99 {} |",
        after_write.len(),
        ms(percentile(&after_write, 0.5)),
        ms(percentile(&after_write, 0.99))
    );
    println!(
        "| decision → receiver, {} deliveries | p50 {} | p99 {} | max {} |",
        latencies.len(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );

    // 3. Throughput: 4 events for every Consumer at once.
    let before = seen.count.load(Ordering::Relaxed);
    let n = (CONSUMERS * 4 * SUBSCRIBERS) as u64;
    let cpu0 = process_cpu();
    let started = Instant::now();
    for i in 0..CONSUMERS {
        write(format!("c{i:04}"), 4, 1000 + i).await;
    }
    deliveries.wake();
    wait_count(&seen, before + n, Duration::from_secs(600)).await;
    let took = started.elapsed();
    let cpu = process_cpu() - cpu0;
    println!(
        "| konsumer, {n} events | {:.0} events/s | {:.0} µs CPU/event (process, incl. receivers and journal writes) |",
        n as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64
    );
    running.stop().await;

    // Baseline: the same receivers, bodies of the same size, same concurrency.
    let body = {
        let e = event(1);
        serde_json::to_vec(&json!({"specversion": "1.0", "id": "0b5e-...", "source": "/apis/x", "type": e.type_.as_str(),
            "time": "2026-11-30T00:00:00Z", "datacontenttype": "application/json",
            "data": {"consumer": {"namespace": "streams", "name": "baseline", "uid": ""}, "sequence": 1, "payload": e.data}}))
        .unwrap()
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .build()
        .unwrap();
    let before = seen.count.load(Ordering::Relaxed);
    let cpu0 = process_cpu();
    let started = Instant::now();
    let per_task = n as usize / 32;
    let mut tasks = Vec::new();
    for t in 0..32 {
        let client = client.clone();
        let body = body.clone();
        let urls = urls.clone();
        tasks.push(tokio::spawn(async move {
            for k in 0..per_task {
                let url = &urls[(t + k) % urls.len()];
                let _ = client
                    .post(url)
                    .header("content-type", "application/cloudevents+json")
                    .body(body.clone())
                    .send()
                    .await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed();
    let cpu = process_cpu() - cpu0;
    let sent = seen.count.load(Ordering::Relaxed) - before;
    println!(
        "| baseline (plain reqwest POSTs), {sent} requests | {:.0} req/s | {:.0} µs CPU/request |",
        sent as f64 / took.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / sent as f64
    );
}

/// Seeds full journals, starts the built binary, reads its RSS.
async fn memory(full: bool) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("consumers.yaml"), consumers_yaml()).unwrap();
    let seen = Arc::new(Seen::default());
    if full {
        let mut urls = Vec::new();
        for i in 0..SUBSCRIBERS - 1 {
            urls.push(format!("http://{}/hook", receiver(i, seen.clone()).await));
        }
        // The subscriber that is down: nothing listens there.
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        urls.push(format!("http://{down}/hook"));
        std::fs::write(dir.path().join("subs.yaml"), subscriptions_yaml(&urls)).unwrap();
        let index = ConsumerIndex::new();
        let store = LocalStore::open(dir.path(), index.clone()).unwrap();
        store.rescan().await.unwrap();
        let mut cursors = std::collections::BTreeMap::new();
        for i in 0..CONSUMERS {
            let name = format!("c{i:04}");
            let mut j = Vec::new();
            journal::append(
                &mut j,
                (0..MAX_ENTRIES).map(event).collect(),
                jiff::Timestamp::now(),
            );
            let status = konsumer::api::ConsumerStatus {
                journal: Some(j),
                ..Default::default()
            };
            store.write_status("streams", &name, &status).await.unwrap();
            cursors.insert(format!("streams/{name}"), 0);
        }
        for i in 0..SUBSCRIBERS {
            store
                .write_subscription_status(
                    &format!("streams/sub{i}"),
                    &SubscriptionStatus {
                        cursors: Some(cursors.clone()),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
        }
    }
    // `RSS_WRAP=heaptrack`: run the binary under a profiler (its RSS then means
    // nothing; its heap profile says where the memory goes).
    let wrap = std::env::var("RSS_WRAP").ok().filter(|w| !w.is_empty());
    let mut command = match &wrap {
        Some(w) => {
            let mut c = std::process::Command::new(w);
            c.arg(env!("CARGO_BIN_EXE_konsumer"));
            c
        }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_konsumer")),
    };
    let mut child = command
        .args(["--log-level", "warn", "serve", "--no-reconciler", "--local"])
        .arg(dir.path())
        .args([
            "--webhook-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--egress-allow",
            "127.0.0.0/8",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let rss = rss_kib(child.id());
    let delivered = seen.count.load(Ordering::Relaxed);
    match &wrap {
        // The profiler writes its file when the program ends normally.
        Some(_) => {
            let _ = std::process::Command::new("pkill")
                .args(["-TERM", "-P", &child.id().to_string()])
                .status();
        }
        None => {
            let _ = child.kill();
        }
    }
    let _ = child.wait();
    if full {
        println!("|   (the 9 live subscribers got {delivered} events meanwhile) |");
    }
    rss
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        konsumer::server::tls::provider();
        println!("| delivery, 1,000 Consumers × 10 subscribers | | |\n|---|---|---|");
        // `ONLY=memory`: the RSS part alone (e.g. under `--profile dev`, whose
        // dependencies are built already, to compare two commits quickly).
        if std::env::var("ONLY").as_deref() != Ok("memory") {
            in_process().await;
        }
        let empty = memory(false).await;
        let full = memory(true).await;
        println!("| RSS, 1,000 Consumers, empty journals, no subscriptions (baseline) | {:.1} MiB |", empty as f64 / 1024.0);
        println!("| RSS, 1,000 Consumers, every journal full (64), 10 subscriptions, one down | {:.1} MiB |", full as f64 / 1024.0);
    });
}
