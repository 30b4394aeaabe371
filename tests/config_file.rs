//! The configuration file: precedence, unknown keys, and config/default.toml in sync with the flags.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medgemma-server"))
}

fn print(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = bin();
    c.args(["config", "print"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "model = \"m\"\n[server]\nport = 9001\nhost = \"0.0.0.0\"\nmax_body_bytes = 5\napi_key = [\"sekret-1\"]\n").unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err) = print(
        &["--config", f, "--host", "10.1.1.1"],
        &[("MEDGEMMA_PORT", "9002")],
    );
    assert!(ok, "{err}");
    assert_eq!(line(&out, "host"), "host = \"10.1.1.1\"  # flag");
    assert_eq!(line(&out, "port"), "port = 9002  # env");
    assert_eq!(line(&out, "max_body_bytes"), "max_body_bytes = 5  # file");
    assert_eq!(line(&out, "max_num_seqs"), "max_num_seqs = 64  # default");
    assert!(!out.contains("sekret"), "secrets are redacted: {out}");
    assert!(line(&out, "api_key").contains("<redacted>"));
}

#[test]
fn bad_keys_and_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "model = \"m\"\nmax_num_sqs = 3\n").unwrap();
    let (ok, _, err) = print(&["--config", file.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("max_num_sqs"), "{err}");
    std::fs::write(&file, "model = \"m\"\nport = \"eighty\"\n").unwrap();
    let (ok, _, err) = print(&["--config", file.to_str().unwrap()], &[]);
    assert!(!ok && err.contains("--port"), "{err}");
    std::fs::write(&file, "port = [").unwrap();
    let (ok, _, err) = print(&["--config", file.to_str().unwrap(), "--model", "m"], &[]);
    assert!(!ok && err.contains("c.toml"), "{err}");
}

#[test]
fn default_toml_documents_every_serve_flag_and_is_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let help = String::from_utf8(bin().args(["serve", "--help"]).output().unwrap().stdout).unwrap();
    // Flag definitions: help lines that begin with `--name` or `-x, --name`.
    let flags = help.lines().filter_map(|l| {
        let l = l.trim_start();
        let l = l
            .split_once(", ")
            .filter(|(short, _)| short.len() == 2 && short.starts_with('-'))
            .map_or(l, |x| x.1);
        l.strip_prefix("--")
            .and_then(|r| r.split([' ', '=', '<']).next())
    });
    let flags: Vec<&str> = flags.collect();
    assert!(flags.len() > 20, "serve --help lists its flags: {flags:?}");
    for flag in flags {
        let key = flag.replace('-', "_");
        if ["help", "version", "config", "log_level"].contains(&key.as_str()) {
            continue;
        }
        assert!(
            text.contains(&format!("{key} =")),
            "config/default.toml does not document {key}"
        );
    }
    let (ok, out, err) = print(&["--config", path.to_str().unwrap(), "--model", "m"], &[]);
    assert!(ok, "{err}");
    assert_eq!(line(&out, "port"), "port = 8000  # file");
}
