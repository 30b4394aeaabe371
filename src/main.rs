//! medgemma-server: a self-hosted, OpenAI-compatible inference server for MedGemma.
//!
//! This file parses the command line and wires the crates together; it is the only
//! place that names the candle executor.

mod cli;
mod generate_cmd;
mod load;
mod serve_cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.log_level.as_deref());
    let result = match cli.command {
        cli::Command::Generate(args) => generate_cmd::run(args),
        cli::Command::Serve(args) => serve_cmd::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr only; stdout carries nothing but results.
fn init_logging(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(level.unwrap_or("warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ").replace('\n', " ")
}
