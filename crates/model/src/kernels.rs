//! Which fused CUDA kernels the operator turned off (`--disable-kernels`): a way
//! around a kernel that misbehaves on some GPU without waiting for a release, and
//! the way to measure what each one gains (`scripts/gpu-check.sh` runs the
//! benchmark with and without). Set once at start-up, before the model loads; a
//! kernel turned off leaves its step on the unfused candle ops.

use std::sync::OnceLock;

/// The kernels that can be turned off, by the names the flag takes.
pub const NAMES: &[&str] = &[
    "paged-decode",
    "paged-rows",
    "add-rmsnorm",
    "qk-rope-write",
    "gelu-mul",
    "gemv",
    "argmax",
    "softmax",
    "bias-epilogue",
    "vision-attention",
    "topk",
];

static DISABLED: OnceLock<Vec<String>> = OnceLock::new();

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelSwitchError {
    #[error("unknown kernel '{0}' (known: {known})", known = NAMES.join(", "))]
    Unknown(String),
    #[error("the kernels to turn off were already set, to {0:?}")]
    AlreadySet(Vec<String>),
}

/// Turns off the kernels `names` (each one of `NAMES`) for the rest of the process.
pub fn disable(names: &[String]) -> Result<(), KernelSwitchError> {
    let names = checked(names)?;
    let set = DISABLED.get_or_init(|| names.clone());
    if *set != names {
        return Err(KernelSwitchError::AlreadySet(set.clone()));
    }
    if !names.is_empty() {
        tracing::info!(kernels = %names.join(","), "fused kernels turned off");
    }
    Ok(())
}

/// `names` trimmed, without empty entries, each a known kernel.
fn checked(names: &[String]) -> Result<Vec<String>, KernelSwitchError> {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !NAMES.contains(&n) {
            return Err(KernelSwitchError::Unknown(n.to_string()));
        }
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether kernel `name` may be used (not turned off).
pub fn enabled(name: &str) -> bool {
    DISABLED
        .get()
        .is_none_or(|off| !off.iter().any(|n| n == name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_normalized() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            checked(&s(&[" softmax", "gemv", "", "softmax"])),
            Ok(s(&["gemv", "softmax"]))
        );
        assert_eq!(
            checked(&s(&["flash"])),
            Err(KernelSwitchError::Unknown("flash".into()))
        );
        let msg = KernelSwitchError::Unknown("flash".into()).to_string();
        assert!(
            msg.contains("paged-rows") && msg.contains("bias-epilogue"),
            "{msg}"
        );
    }
}
