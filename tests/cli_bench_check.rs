//! The `bench` and `check` commands end to end on the CPU with the tiny fixtures:
//! they run, exit as they should and write what they promise. No timing is
//! asserted, and the numerics of a GPU are checked on one (scripts/gpu-check.sh).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_medgemma-server"))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn bench_on_a_tiny_config_measures_every_level_and_the_image_request() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("results/bench.json");
    let out = bin()
        .args(["bench", "--synthetic"])
        .arg(fixtures().join("tiny-gemma3/config.json"))
        .args(["--device", "cpu", "--concurrency", "1,3"])
        .args([
            "--prompt-tokens",
            "12",
            "--max-tokens",
            "5",
            "--images",
            "1",
        ])
        .arg("--json")
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("TTFT p50 ms"), "{stdout}");
    assert!(stdout.contains("1 image(s) + 20 text tokens"), "{stdout}");

    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(doc["device"]["name"], "cpu");
    assert_eq!(doc["dtype"], "f32");
    // Decode steps are not replayed on the CPU, so none is run ahead.
    assert_eq!(doc["engine"]["decode_lookahead"]["launched"], 0);
    assert_eq!(doc["shapes"]["text"]["num_hidden_layers"], 7);
    let levels = doc["levels"].as_array().unwrap();
    assert_eq!(levels.len(), 2);
    for (level, c) in levels.iter().zip([1, 3]) {
        assert_eq!(level["concurrency"], c);
        assert_eq!(level["incomplete"], 0, "{level}");
        assert_eq!(level["output_tokens"], c * 5);
        assert_eq!(level["prompt_tokens"], c * 12);
        assert!(level["ttft_ms"]["p50"].as_f64().unwrap() > 0.0, "{level}");
        assert!(level["itl_ms"]["p99"].as_f64().unwrap() > 0.0, "{level}");
        assert!(level["peak_memory_bytes"].as_u64().unwrap() > 0, "{level}");
    }
    let image = &doc["image_ttft"];
    assert_eq!(image["images"], 1);
    assert!(image["with_images_ms"].as_f64().unwrap() > 0.0, "{image}");
    assert!(image["follow_up_ms"].as_f64().unwrap() > 0.0, "{image}");
    assert!(
        stdout.contains("a follow-up on the same image(s)"),
        "{stdout}"
    );
}

#[test]
fn bench_names_the_presets_when_the_model_is_unknown() {
    let out = bin()
        .args(["bench", "--synthetic", "medgemma-9b", "--device", "cpu"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("medgemma-4b, medgemma-27b"), "{all}");
}

#[test]
fn bench_and_check_refuse_cuda_in_a_cpu_build() {
    if cfg!(feature = "cuda") {
        return;
    }
    for args in [
        &["bench", "--synthetic", "medgemma-4b", "--device", "cuda:0"][..],
        &["check", "--device", "cuda"][..],
    ] {
        let out = bin().args(args).output().unwrap();
        assert!(!out.status.success());
        let all = text(&out);
        assert!(all.contains("rebuild with --features cuda"), "{all}");
    }
}

/// `--sampled` draws as MedGemma's defaults do, and every request still gives
/// exactly the tokens asked for.
#[test]
fn bench_draws_tokens_as_the_defaults_do_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("bench.json");
    let out = bin()
        .args(["bench", "--synthetic"])
        .arg(fixtures().join("tiny-gemma3-text/config.json"))
        .args(["--device", "cpu", "--concurrency", "4", "--sampled"])
        .args(["--prompt-tokens", "8", "--max-tokens", "6", "--json"])
        .arg(&json_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("drawn with temperature 1, top-k 64, top-p 0.95"),
        "{stdout}"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();
    assert_eq!(doc["settings"]["sampled"], true);
    let level = &doc["levels"][0];
    assert_eq!(level["incomplete"], 0, "{level}");
    assert_eq!(level["output_tokens"], 4 * 6);
}

/// The mechanics of `check` (fixtures found, one line per prompt, ids compared, bf16
/// compared stage by stage): the CPU against itself, so every stage agrees exactly.
#[test]
fn check_runs_every_fixture_prompt_on_the_cpu() {
    let out = bin()
        .args(["check", "--fixtures"])
        .arg(fixtures())
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for fixture in ["tiny-gemma3", "tiny-gemma3-text"] {
        let lines = stdout
            .lines()
            .filter(|l| l.starts_with(&format!("{fixture}/")))
            .collect::<Vec<_>>();
        assert!(!lines.is_empty(), "{stdout}");
        assert!(lines.iter().all(|l| l.contains(": f32 ok (")), "{stdout}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains("stage by stage vs CPU: worst 0.0e0 ")),
            "{stdout}"
        );
    }
    assert!(stdout.contains(" 0 failed;"), "{stdout}");
    // The rows attention's plan, through its host form, in both precisions.
    let rows = stdout
        .lines()
        .filter(|l| l.contains("rows attention end to end") && l.contains("(ok;"))
        .count();
    assert_eq!(rows, 2, "{stdout}");
    // Plain greedy with decode steps run ahead (through the replay's CPU form), and
    // sampling from the rows' largest logits (the top-k kernel's host form).
    for fixture in ["tiny-gemma3", "tiny-gemma3-text"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{fixture}: f32 sampled (top-k 64")))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            line.contains("largest logits: ok (tokens = whole rows' on "),
            "{line}"
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{fixture}: f32 plain greedy")))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(line.contains("run ahead: ok (ids = CPU on "), "{line}");
        assert!(
            !line.contains(" 0 of "),
            "some steps run ahead were used: {line}"
        );
    }
}
