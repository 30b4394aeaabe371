//! medgemma-server: a self-hosted, OpenAI-compatible inference server for MedGemma.
//!
//! This file parses the command line and wires the crates together; it is the only
//! place that names the candle executor.

mod bench_cmd;
mod check_cmd;
mod cli;
mod config;
mod generate_cmd;
mod load;
mod serve_cmd;

use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = match config::command_with_file(cli::Cli::command(), &args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return std::process::ExitCode::from(2);
        }
    };
    let matches = command.clone().get_matches_from(&args);
    let cli = match cli::Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    init_logging(cli.log_level.as_deref());
    let result = match cli.command {
        cli::Command::Generate(args) => generate_cmd::run(args),
        cli::Command::Serve(args) => serve_cmd::run(args),
        cli::Command::Bench(args) => bench_cmd::run(args),
        cli::Command::Check(args) => check_cmd::run(args),
        cli::Command::Audit(cli::AuditCommand::Verify(args)) => audit_verify(&args),
        cli::Command::Config(cli::ConfigCommand::Print(_)) => {
            let sub = matches
                .subcommand_matches("config")
                .and_then(|m| m.subcommand_matches("print"));
            let print = command
                .find_subcommand("config")
                .and_then(|c| c.find_subcommand("print"));
            if let (Some(m), Some(c)) = (sub, print) {
                print!("{}", config::render_effective(m, c));
            }
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// `audit verify`: prints what an intact log holds; an error names the first
/// broken line.
fn audit_verify(args: &cli::AuditVerifyArgs) -> anyhow::Result<()> {
    let chain = serve_cmd::audit_chain(args.key_file.as_deref())?;
    let found = medgemma_http::audit::verify(&args.file, &chain)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let unchained = match found.unchained {
        0 => String::new(),
        n => format!(" ({n} unchained lines from before chaining first)"),
    };
    println!(
        "{}: {} entries, every line follows the one before it{unchained}",
        args.file.display(),
        found.entries
    );
    Ok(())
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
