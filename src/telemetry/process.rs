//! The standard `process_*` metrics every Prometheus exporter has (CPU, memory,
//! file descriptors, threads, start time), read from `/proc/self` at each scrape.
//!
//! The collector crate of the prometheus-client ecosystem
//! (`kubert-prometheus-process`) is built against prometheus-client 0.23 and
//! cannot be registered in konsumer's 0.25 registry, so this small collector
//! reads procfs itself (with the `procfs` crate).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One reading of the process's numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Reading {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: i64,
    pub virtual_memory_bytes: i64,
    pub open_fds: i64,
    /// The soft limit; `None` when unlimited.
    pub max_fds: Option<i64>,
    pub threads: i64,
    pub start_time_seconds: f64,
}

#[cfg(target_os = "linux")]
fn read() -> Option<Reading> {
    let me = procfs::process::Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let boot = procfs::boot_time_secs().ok()? as f64;
    let max_fds = me
        .limits()
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => i64::try_from(v).ok(),
            procfs::process::LimitValue::Unlimited => None,
        });
    Some(Reading {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_memory_bytes: (stat.rss * procfs::page_size()) as i64,
        virtual_memory_bytes: stat.vsize as i64,
        open_fds: me.fd_count().map_or(0, |n| n as i64),
        max_fds,
        threads: stat.num_threads,
        start_time_seconds: boot + stat.starttime as f64 / ticks,
    })
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<Reading> {
    None
}

/// Registered in the root registry (no `konsumer_` prefix: these are the names
/// every dashboard and alert expects).
#[derive(Debug, Default)]
pub struct ProcessCollector;

fn gauge<N>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(metric)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(r.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)?;
        gauge(
            &mut encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            r.resident_memory_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            r.virtual_memory_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Number of open file descriptors",
            r.open_fds,
        )?;
        if let Some(max) = r.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            )?;
        }
        gauge(
            &mut encoder,
            "process_threads",
            "Number of OS threads in the process",
            r.threads,
        )?;
        gauge(
            &mut encoder,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            r.start_time_seconds,
        )
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_as_itself() {
        let r = read().unwrap();
        assert!(r.resident_memory_bytes > 1 << 20, "{r:?}");
        assert!(r.virtual_memory_bytes >= r.resident_memory_bytes);
        assert!(r.open_fds >= 3 && r.threads >= 1, "{r:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            r.start_time_seconds <= now + 1.0 && r.start_time_seconds > now - 3600.0,
            "{r:?}"
        );
    }
}
