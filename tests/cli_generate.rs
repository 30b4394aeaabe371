//! The `generate` command end to end: the real binary on the tiny checkpoints.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medgemma-server"))
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn golden(ckpt: &str, prompt: &str) -> Value {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(ckpt).join("goldens.json")).unwrap())
            .unwrap();
    g["prompts"][prompt].clone()
}

#[test]
fn greedy_generation_prints_transformers_text_only() {
    for ckpt in ["tiny-gemma3", "tiny-gemma3-text"] {
        let p = golden(ckpt, "short");
        let prompt = p["messages"][0]["content"].as_str().unwrap();
        let n = p["natural"]["ids"].as_array().unwrap().len();
        let max = if p["natural"]["finish_reason"] == "stop" {
            n + 2
        } else {
            n
        };
        let out = bin()
            .args(["generate", "--model"])
            .arg(fixture(ckpt))
            .args(["--prompt", prompt, "--max-tokens", &max.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            stdout,
            format!("{}\n", p["natural"]["text"].as_str().unwrap()),
            "{ckpt}"
        );
    }
}

#[test]
fn sampling_with_a_seed_is_repeatable() {
    let run = |seed: &str| {
        let out = bin()
            .args(["generate", "--model"])
            .arg(fixture("tiny-gemma3"))
            .args([
                "--prompt",
                "Hello",
                "--max-tokens",
                "12",
                "--temperature",
                "1.0",
                "--seed",
                seed,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

fn expect_one_line_error(model: &Path, want: &str) {
    let out = bin()
        .args(["generate", "--model"])
        .arg(model)
        .args(["--prompt", "Hi"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{} should fail with {want}",
        model.display()
    );
    assert!(out.stdout.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains(want),
        "{stderr}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn bad_checkpoints_fail_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    expect_one_line_error(&d.join("nope"), "not a checkpoint folder");
    expect_one_line_error(d, "config.json");

    copy_dir(&fixture("tiny-gemma3"), d);
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    expect_one_line_error(d, "no model.safetensors");

    let bytes = std::fs::read(fixture("tiny-gemma3/model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() - 1000]).unwrap();
    expect_one_line_error(d, "truncated");

    std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"hidden_size\": 64", "\"hidden_size\": 72"),
    )
    .unwrap();
    expect_one_line_error(d, "has shape");

    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"model_type\": \"gemma3\"", "\"model_type\": \"mistral\""),
    )
    .unwrap();
    expect_one_line_error(d, "unsupported model_type \"mistral\"");

    std::fs::write(d.join("config.json"), &cfg).unwrap();
    std::fs::write(d.join("tokenizer.json"), "{").unwrap();
    expect_one_line_error(d, "tokenizer.json");
}

#[test]
fn offline_hub_id_not_in_cache_is_clear() {
    let cache = tempfile::tempdir().unwrap();
    let out = bin()
        .args([
            "generate",
            "--model",
            "google/medgemma-4b-it",
            "--prompt",
            "Hi",
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", cache.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("HF_HUB_OFFLINE") && stderr.contains("google/medgemma-4b-it"),
        "{stderr}"
    );
}

/// A hub id served from the local cache with HF_HUB_OFFLINE=1, checked against
/// the manifest written at download (`--verify`).
#[test]
fn offline_cache_with_verify_checks_the_manifest() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--google--medgemma-4b-it");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(fixture("tiny-gemma3")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::copy(&p, snap.join(&name)).unwrap();
        files.push(name);
    }
    let run = || {
        bin()
            .args([
                "generate",
                "--model",
                "google/medgemma-4b-it",
                "--verify",
                "--prompt",
                "Hi",
                "--max-tokens",
                "3",
            ])
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HUB_CACHE", cache.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no manifest"));
    medgemma_model::verify::write_manifest(&snap, &files).unwrap();
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut bytes = std::fs::read(snap.join("model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(snap.join("model.safetensors"), bytes).unwrap();
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("model.safetensors")
            && stderr.contains("manifest"),
        "{stderr}"
    );
}

/// `--disable-kernels` takes the kernels' names; an unknown one is one clear line,
/// and turning kernels off leaves the CPU's answer as it is (they are CUDA only).
#[test]
fn disable_kernels_takes_known_names() {
    let model = fixture("tiny-gemma3-text");
    let run = |kernels: &str| {
        bin()
            .args(["generate", "--model"])
            .arg(&model)
            .args([
                "--prompt",
                "Hi",
                "--max-tokens",
                "4",
                "--disable-kernels",
                kernels,
            ])
            .output()
            .unwrap()
    };
    let bad = run("paged-rows,flash");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.starts_with("error: unknown kernel 'flash'") && stderr.contains("paged-rows"),
        "{stderr}"
    );
    let off = run("paged-rows,softmax,bias-epilogue");
    let plain = bin()
        .args(["generate", "--model"])
        .arg(&model)
        .args(["--prompt", "Hi", "--max-tokens", "4"])
        .output()
        .unwrap();
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert_eq!(off.stdout, plain.stdout);
}
