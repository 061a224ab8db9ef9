use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

// jemalloc, returning freed memory within a second, two arenas: measured (see
// BENCHMARKS.md) to hold less memory than glibc's malloc at 1,000 and 10,000
// Consumers, whose arenas kept tens of MB of freed chunks; with buffers of a few
// pages kept in place when shrunk and grown again (rustls's receive buffer, every
// large review: `konsumer::allocator`). The feature `system-allocator` leaves it
// out, so that heaptrack sees every allocation.
#[cfg(not(any(target_env = "msvc", feature = "system-allocator")))]
#[global_allocator]
static ALLOCATOR: konsumer::allocator::Allocator = konsumer::allocator::Allocator;

#[cfg(not(any(target_env = "msvc", feature = "system-allocator")))]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 70] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

/// Threads for blocking tasks (tokio's default is 512).
const BLOCKING_THREADS: usize = 32;

fn main() -> ExitCode {
    let cli = konsumer::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Blocking tasks are short (a manifest read, a status write, a DNS
        // lookup) and the async side bounds how many it starts at once, but a
        // burst of them (10,000 Consumers retrying an unreachable Prometheus
        // in the same minute) grew tokio's default pool of up to 512 threads to
        // hundreds, each holding ~100 KB (its allocator cache, its stack):
        // measured, BENCHMARKS.md. Beyond the cap, tasks wait their turn.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(konsumer::cli::run(cli));
    // Blocking tasks (a DNS lookup of an unreachable Prometheus, say) must not hold
    // the exit after everything else has stopped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}
