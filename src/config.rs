//! The optional TOML configuration file and `config print`.
//!
//! Precedence: command-line flag > `MEDGEMMA_*` environment variable > file >
//! built-in default. The file's values become the flags' defaults before clap
//! parses, so clap's own order (flag, then env, then default) gives exactly that.
//! Keys are the long flag names (`max-num-seqs` or `max_num_seqs`), at the top
//! level or in any `[section]`; an unknown key or a bad value names the key.

use std::ffi::OsString;

use anyhow::{anyhow, bail, Context, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// Flag ids whose defaults came from the config file (for `config print`).
static FROM_FILE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Arguments whose values are secrets: never printed.
const SECRETS: &[&str] = &["api_keys"];

/// The `--config` path given on the command line or in MEDGEMMA_CONFIG.
fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    std::env::var_os("MEDGEMMA_CONFIG")
}

/// `key = value` pairs of the file, sections flattened.
fn flatten(table: &toml::Table, out: &mut Vec<(String, String)>) -> Result<()> {
    for (k, v) in table {
        match v {
            toml::Value::Table(t) => flatten(t, out)?,
            toml::Value::Array(a) => {
                let items: Result<Vec<String>> = a.iter().map(|x| scalar(k, x)).collect();
                out.push((k.clone(), items?.join(",")));
            }
            other => out.push((k.clone(), scalar(k, other)?)),
        }
    }
    Ok(())
}

fn scalar(key: &str, v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => bail!("config key '{key}': expected a string, number, boolean or list"),
    })
}

/// Makes the file's values the defaults of the flags of the subcommand at `path`
/// (`["serve"]`, `["generate"]` or `["config", "print"]`).
fn apply(cmd: Command, path: &[&str], pairs: &[(String, String)]) -> Result<Command> {
    let target = path
        .iter()
        .try_fold(&cmd, |c, name| c.find_subcommand(name));
    let Some(sub) = target else { return Ok(cmd) };
    let mut defaults = Vec::new();
    for (key, value) in pairs {
        let norm = key.replace('_', "-");
        let arg = sub
            .get_arguments()
            .find(|a| a.get_long() == Some(norm.as_str()))
            .ok_or_else(|| {
                anyhow!(
                    "unknown config key '{key}' (no --{norm} flag for {})",
                    path.join(" ")
                )
            })?;
        defaults.push((arg.get_id().clone(), value.clone()));
    }
    let _ = FROM_FILE.set(
        defaults
            .iter()
            .map(|(id, _)| id.as_str().to_string())
            .collect(),
    );
    let set = |sc: Command| {
        defaults.iter().fold(sc, |sc, (id, value)| {
            let value: &'static str = Box::leak(value.clone().into_boxed_str());
            sc.mut_arg(id.clone(), |a| a.required(false).default_value(value))
        })
    };
    Ok(match path {
        [one] => cmd.mut_subcommand(*one, set),
        [one, two] => cmd.mut_subcommand(*one, |c| c.mut_subcommand(*two, set)),
        _ => cmd,
    })
}

/// The command line with the config file's values as defaults.
pub fn command_with_file(cmd: Command, args: &[OsString]) -> Result<Command> {
    let Some(path) = config_path(args) else {
        return Ok(cmd);
    };
    let shown = path.to_string_lossy().into_owned();
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading config file {shown}"))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("config file {shown}"))?;
    let mut pairs = Vec::new();
    flatten(&table, &mut pairs)?;
    pairs.retain(|(k, _)| k != "config");
    // The log level is a global flag: its file value is the root command's default.
    let (global, pairs): (Vec<_>, Vec<_>) = pairs
        .into_iter()
        .partition(|(k, _)| k == "log_level" || k == "log-level");
    let mut cmd = apply(cmd, &subcommand_path(args), &pairs)
        .with_context(|| format!("config file {shown}"))?;
    if let Some((_, level)) = global.into_iter().last() {
        let level: &'static str = Box::leak(level.into_boxed_str());
        cmd = cmd.mut_arg("log_level", |a| a.default_value(level));
    }
    Ok(cmd)
}

fn subcommand_path(args: &[OsString]) -> Vec<&'static str> {
    let words: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match words
        .iter()
        .find(|w| !w.starts_with('-'))
        .map(String::as_str)
    {
        Some("generate") => vec!["generate"],
        Some("config") => vec!["config", "print"],
        _ => vec!["serve"],
    }
}

/// The effective configuration as TOML, each value with where it came from;
/// secrets redacted.
pub fn render_effective(matches: &ArgMatches, cmd: &Command) -> String {
    let mut out =
        String::from("# medgemma-server effective configuration (flag > env > file > default)\n");
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(id, "help" | "version" | "config") {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "env",
            Some(ValueSource::DefaultValue)
                if FROM_FILE.get().is_some_and(|f| f.iter().any(|x| x == id)) =>
            {
                "file"
            }
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|x| x.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let shown = if SECRETS.contains(&id) && !values.is_empty() {
            format!(
                "[{}]",
                values
                    .iter()
                    .map(|_| "\"<redacted>\"")
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if values.len() > 1 || arg.get_value_delimiter().is_some() {
            format!(
                "[{}]",
                values
                    .iter()
                    .map(|v| toml_str(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else if let Some(v) = values.first() {
            toml_str(v)
        } else {
            out.push_str(&format!("# {long} is unset\n"));
            continue;
        };
        out.push_str(&format!(
            "{} = {shown}  # {source}\n",
            long.replace('-', "_")
        ));
    }
    out
}

fn toml_str(v: &str) -> String {
    if v.parse::<i64>().is_ok() || v.parse::<f64>().is_ok() || v == "true" || v == "false" {
        v.to_string()
    } else {
        toml::Value::String(v.to_string()).to_string()
    }
}
