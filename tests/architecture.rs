//! The crates' dependencies point one way (DESIGN.md): checked on the real
//! dependency graph with `cargo tree`.

use std::process::Command;

fn deps(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn assert_free_of(package: &str, forbidden: &[&str]) {
    let d = deps(package);
    for f in forbidden {
        assert!(
            !d.iter().any(|x| x == f),
            "{package} must not depend on {f}"
        );
    }
}

#[test]
fn dependencies_point_one_way() {
    let engine = [
        "candle-core",
        "candle-nn",
        "candle-transformers",
        "medgemma-model",
    ];
    let web = ["axum", "tokio", "tower-http", "hyper"];
    assert_free_of(
        "medgemma-core",
        &[
            &engine[..],
            &web[..],
            &["medgemma-http", "medgemma-scheduler"],
        ]
        .concat(),
    );
    assert_free_of("medgemma-http", &engine);
    assert_free_of(
        "medgemma-scheduler",
        &[&engine[..], &["axum", "medgemma-http"]].concat(),
    );
    assert_free_of(
        "medgemma-model",
        &[&web[..], &["medgemma-http", "medgemma-scheduler"]].concat(),
    );
    assert_free_of("medgemma-preprocess", &[&engine[..], &web[..]].concat());
    assert_free_of("medgemma-protocol", &[&engine[..], &web[..]].concat());
    // The kernel emulator is for tests only, and stands alone.
    for package in ["medgemma-server", "medgemma-model", "medgemma-http"] {
        assert_free_of(package, &["medgemma-kernel-emu"]);
    }
    assert_free_of(
        "medgemma-kernel-emu",
        &[&engine[..], &web[..], &["medgemma-core"]].concat(),
    );
}
