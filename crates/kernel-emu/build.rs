//! Compiles `crates/model/kernels/*.cu` with the host C++ compiler, `include/emu.h`
//! standing in for the CUDA device API, and writes the registry of the kernels found
//! (each `__global__` function of each file, after the preprocessor expanded the
//! files' macros) for `src/lib.rs`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let here = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = here.join("../model/kernels");
    let include = here.join("include");
    println!("cargo:rerun-if-changed={}", kernels.display());
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-changed=src/runtime.cpp");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .expect("crates/model/kernels")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    sources.sort();
    sources.push(here.join("src/emu_checks.cu"));
    println!("cargo:rerun-if-changed=src/emu_checks.cu");

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        .opt_level(2)
        .warnings(false)
        .include(&include)
        .include(&kernels)
        .flag("-include")
        .flag(include.join("emu.h").to_str().expect("a UTF-8 path"))
        .flag("-fno-strict-aliasing")
        .flag("-Wno-unknown-pragmas")
        .file(here.join("src/runtime.cpp"));
    let mut registry = String::new();
    let mut entries = String::new();
    for src in &sources {
        let names = kernel_names(&build, src);
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 name");
        let mut unit = format!("#include \"{}\"\n#include \"thunk.h\"\n", src.display());
        for name in &names {
            writeln!(unit, "EMU_THUNK({name})").expect("writing to a String");
            writeln!(
                registry,
                "    fn emu_check_{name}(p: *const *mut c_void, s: *const usize, n: usize, e: *mut c_char, el: usize) -> i32;\n    fn emu_call_{name}(p: *const *mut c_void);"
            )
            .expect("writing to a String");
            writeln!(
                entries,
                "    (\"{name}\", emu_check_{name}, emu_call_{name}),"
            )
            .expect("writing to a String");
        }
        let unit_path = out.join(format!("emu_{stem}.cpp"));
        std::fs::write(&unit_path, unit).expect("writing a generated source");
        build.file(unit_path);
    }
    build.compile("medgemma_kernel_emu");
    let rust = format!(
        "unsafe extern \"C\" {{\n{registry}}}\n\n/// Every kernel: its name, its argument check and its call.\nstatic KERNELS: &[(&str, CheckFn, CallFn)] = &[\n{entries}];\n"
    );
    std::fs::write(out.join("registry.rs"), rust).expect("writing the registry");
}

/// The `__global__` functions `src` defines, read off its preprocessed text.
fn kernel_names(build: &cc::Build, src: &Path) -> Vec<String> {
    let compiler = build.get_compiler();
    let output = Command::new(compiler.path())
        .args(compiler.args())
        .args(["-E", "-P", "-DEMU_SCAN", "-x", "c++"])
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("preprocessing {}: {e}", src.display()));
    assert!(
        output.status.success(),
        "preprocessing {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut names = Vec::new();
    for piece in text.split("EMU_KERNEL_MARK").skip(1) {
        let rest = piece
            .trim_start()
            .strip_prefix("void")
            .expect("kernels return void");
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !name.is_empty(),
            "a kernel without a name in {}",
            src.display()
        );
        names.push(name);
    }
    names
}
