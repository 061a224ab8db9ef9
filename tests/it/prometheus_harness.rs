//! A real Prometheus (Debian's package) on a free loopback port, scraping a small
//! exporter whose per-partition series the test changes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Serves `/metrics` (text exposition) from a string the test sets.
pub struct Exporter {
    pub port: u16,
    body: Arc<Mutex<String>>,
}

impl Exporter {
    pub fn start() -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Arc::new(Mutex::new(String::new()));
        let shared = body.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.read(&mut buf);
                let text = shared.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                    text.len()
                );
                let _ = stream.write_all(response.as_bytes());
            }
        });
        Exporter { port, body }
    }

    /// Sets the gauges of every partition: (production/s, messages behind).
    pub fn set(&self, topic: &str, partitions: &[(u32, f64, f64)]) {
        let mut text = String::new();
        for metric in [
            "test_kafka_production_rate",
            "test_kafka_consumption_rate",
            "test_kafka_lag",
        ] {
            text.push_str(&format!("# TYPE {metric} gauge\n"));
            for (p, production, behind) in partitions {
                let value = if metric == "test_kafka_lag" {
                    *behind
                } else {
                    *production
                };
                text.push_str(&format!(
                    "{metric}{{topic=\"{topic}\",partition=\"{p}\"}} {value}\n"
                ));
            }
        }
        *self.body.lock().unwrap() = text;
    }
}

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

fn binary() -> String {
    std::env::var("KONSUMER_PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".into())
}

impl Prometheus {
    /// Starts Prometheus scraping the exporter on `exporter_port` every second;
    /// waits until it is ready.
    pub fn start(exporter_port: u16) -> Prometheus {
        Self::start_with_prefix(exporter_port, "")
    }

    /// The same, serving its API under `prefix` (`--web.route-prefix`).
    pub fn start_with_prefix(exporter_port: u16, prefix: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: kafka\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                exporter_port
            ),
        )
        .unwrap();
        let child = Command::new(binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--query.lookback-delta=3s")
            .args((!prefix.is_empty()).then(|| format!("--web.route-prefix={prefix}")))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `{}` ({e}): the reconciler's end-to-end test needs a real Prometheus; \
                     install Debian's package (apt-get install prometheus) or set KONSUMER_PROMETHEUS_BIN",
                    binary()
                )
            });
        // Owned from here on, so that a failed start still kills and reaps it.
        let mut prometheus = Prometheus {
            child,
            url: String::new(),
            _dir: dir,
        };
        let stderr = prometheus.child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("msg=\"Listening on\"")
                    && let Some(addr) = line.split("address=").nth(1)
                {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("Prometheus did not say where it listens");
        let url = format!("http://{addr}");
        prometheus.url = url.clone();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if ureq_get(&format!("{url}{prefix}/-/ready")).is_some_and(|(code, _)| code == 200) {
                return prometheus;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Prometheus at {url} never became ready");
    }

    /// Waits until `query` returns at least `series` series.
    pub fn wait_for_series(&self, query: &str, series: usize, within: Duration) {
        let started = Instant::now();
        let url = format!("{}/api/v1/query?query={}", self.url, encode(query));
        while started.elapsed() < within {
            if let Some((200, body)) = ureq_get(&url)
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
                && v["data"]["result"]
                    .as_array()
                    .is_some_and(|r| r.len() >= series)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{query} did not return {series} series within {within:?}");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.1 GET over std (the harness runs outside the async runtime).
fn ureq_get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((code, body.to_string()));
    }
    let mut decoded = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            break;
        }
        decoded.push_str(after.get(..n)?);
        rest = after.get(n + 2..)?;
    }
    Some((code, decoded))
}
