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
    count_cpu_threads_once();
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

/// candle asks for the CPU thread count on every CPU matrix product and, unless
/// `RAYON_NUM_THREADS` holds one, counts physical cores by parsing /proc/cpuinfo
/// each time: about a tenth of a small model's decode step on the CPU. Counting
/// once here, before any thread starts, and setting the variable keeps the same
/// count (and the operator's, where candle would read it) at no cost per product.
fn count_cpu_threads_once() {
    let set = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > 0);
    if !set {
        let n = medgemma_model::cpu_thread_count();
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
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
    for n in &found.cut {
        println!("line {n} was cut short (a crash while writing it); its link holds");
    }
    Ok(())
}

/// Logs go to stderr only; stdout carries nothing but results.
fn init_logging(level: Option<&str>) {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(level.unwrap_or("warn")))
        .with_writer(std::io::stderr)
        .init();
}

/// Libraries that log what passes through them at debug or trace (the
/// tokenizer logs every character of a prompt it normalizes): never more than
/// info, whatever was asked, so no request content reaches the logs.
const LIBRARY_CAPS: [&str; 9] = [
    "tokenizers=info",
    "minijinja=info",
    "hyper=info",
    "h2=info",
    "axum=info",
    "tower_http=info",
    "rustls=info",
    "ureq=info",
    "candle=info",
];

/// `--log-level`: a plain level applies to this server's own code, and to
/// libraries up to info; a directive list (`medgemma_http=debug,...`) is taken
/// as written. The library caps apply either way.
fn log_filter(level: &str) -> tracing_subscriber::EnvFilter {
    let spec = match level {
        "trace" | "debug" => format!("info,medgemma={level}"),
        "error" | "warn" | "info" => format!("{level},medgemma={level}"),
        other => other.to_string(),
    };
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    for cap in LIBRARY_CAPS {
        if let Ok(d) = cap.parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    parts.dedup();
    parts.join(": ").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    fn enabled(spec: &str, target_is_tokenizers: bool, level: Level) -> bool {
        let subscriber = tracing_subscriber::registry().with(super::log_filter(spec));
        tracing::subscriber::with_default(subscriber, || match (target_is_tokenizers, level) {
            (true, Level::TRACE) => {
                tracing::enabled!(target: "tokenizers::normalizer", Level::TRACE)
            }
            (true, _) => tracing::enabled!(target: "tokenizers::normalizer", Level::INFO),
            (false, Level::TRACE) => {
                tracing::enabled!(target: "medgemma_http::access", Level::TRACE)
            }
            (false, _) => tracing::enabled!(target: "medgemma_http::access", Level::INFO),
        })
    }

    /// The tokenizer logs each character of a prompt at trace: never shown,
    /// even when asked for by name.
    #[test]
    fn libraries_that_log_content_are_capped() {
        for spec in [
            "trace",
            "debug",
            "tokenizers=trace",
            "trace,tokenizers=trace",
        ] {
            assert!(!enabled(spec, true, Level::TRACE), "{spec}");
        }
        assert!(enabled("trace", false, Level::TRACE));
        assert!(enabled("info", true, Level::INFO));
        assert!(!enabled("warn", false, Level::INFO));
    }
}
