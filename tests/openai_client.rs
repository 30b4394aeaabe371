//! Runs the official `openai` Python client tests (tests/python) against the real
//! binary. The interpreter is MEDGEMMA_TEST_PYTHON, else .venv-tests/bin/python,
//! which `.ci/run` creates from tests/python/requirements.txt. Without either the
//! test fails and says how to set it up: it never skips silently.

use std::path::Path;
use std::process::Command;

#[test]
fn official_openai_python_client() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("MEDGEMMA_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| root.join(".venv-tests/bin/python"));
    assert!(
        python.exists(),
        "no Python with the openai client at {}: run .ci/run (or python3 -m venv .venv-tests && \
         .venv-tests/bin/pip install -r tests/python/requirements.txt)",
        python.display()
    );
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .current_dir(root)
        .env("MEDGEMMA_BIN", env!("CARGO_BIN_EXE_medgemma-server"))
        .output()
        .expect("pytest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed"), "pytest ran no test:\n{stdout}");
}
