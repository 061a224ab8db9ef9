use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    konsumer::cli::run(konsumer::cli::Cli::parse()).await
}
