//! With the `cuda` feature, compiles the crate's CUDA kernels to PTX with nvcc
//! (`NVCC`, else `nvcc` on the PATH) for `CUDA_COMPUTE_CAP` (default 80; the
//! driver JIT-compiles the PTX for newer GPUs). Without it, does nothing.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: &[&str] = &[
    "paged_attention",
    "add_rmsnorm",
    "qk_norm_rope_write",
    "gelu_mul",
    "gemv",
    "argmax",
    "softmax",
    "bias_epilogue",
    "paged_rows",
    "vision_attention",
    "topk",
];

fn main() {
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_CUDA");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".to_string());
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".to_string());
    let cap: String = cap.chars().filter(char::is_ascii_digit).collect();
    println!("cargo:rerun-if-changed=kernels/convert.cuh");
    println!("cargo:rerun-if-changed=kernels/attend_keys.cuh");
    println!("cargo:rerun-if-changed=kernels/mma.cuh");
    for name in KERNELS {
        let src = format!("kernels/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17"])
            .arg(format!("-arch=compute_{cap}"))
            .arg("-Ikernels")
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| panic!("running {nvcc} for {src}: {e}"));
        assert!(status.success(), "{nvcc} failed on {src}");
    }
}
