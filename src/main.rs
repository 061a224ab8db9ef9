use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

fn main() -> ExitCode {
    let cli = konsumer::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
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
