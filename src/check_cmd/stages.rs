//! The low-precision comparison stage by stage: each stage of the decoder (the
//! embedding, every layer, the head) runs on the device from the CPU's input to
//! that stage in the same dtype, so that the two runs' rounding differences do
//! not compound through the layers (on random-weight checkpoints they grow to
//! several 1e-2 end to end even between two CPU implementations). A wrong kernel
//! still shows at full size in the stage that uses it.

use anyhow::Result;
use medgemma_model::stages::{relative_l2, state_error, Prefill, StageState, Trace};
use medgemma_model::text::TextModel;

/// The worst stage of one prompt.
pub struct StageErrors {
    /// The device against the CPU, same dtype.
    pub device: f64,
    /// Which stage that was.
    pub stage: String,
    /// f32 on the CPU against the CPU's low precision, from the same inputs: the
    /// size of one stage's rounding, for scale.
    pub rounding: f64,
}

/// `cpu_low` and `dev` run the same dtype; `cpu_f32` is the f32 reference.
pub fn compare(
    cpu_low: &TextModel,
    cpu_f32: &TextModel,
    dev: &TextModel,
    ids: &[u32],
) -> Result<StageErrors> {
    let trace = Prefill::new(cpu_low, ids)?.trace()?;
    let dev = Prefill::new(dev, ids)?;
    let f32_run = Prefill::new(cpu_f32, ids)?;
    let mut worst = StageErrors {
        device: state_error(&dev.embed()?, &trace.states[0])?,
        stage: "embedding".into(),
        rounding: state_error(&f32_run.embed()?, &trace.states[0])?,
    };
    for (i, pair) in trace.states.windows(2).enumerate() {
        let (input, want) = (&pair[0], &pair[1]);
        note(
            &mut worst,
            state_error(&dev.layer(i, input)?, want)?,
            state_error(&f32_run.layer(i, input)?, want)?,
            || format!("layer {i}"),
        );
    }
    let last = final_state(&trace)?;
    note(
        &mut worst,
        relative_l2(&dev.head(&last.normed)?, &trace.logits)?,
        relative_l2(&f32_run.head(&last.normed)?, &trace.logits)?,
        || "head".into(),
    );
    Ok(worst)
}

fn final_state(trace: &Trace) -> Result<&StageState> {
    trace
        .states
        .last()
        .ok_or_else(|| anyhow::anyhow!("the trace has no stage"))
}

fn note(worst: &mut StageErrors, device: f64, rounding: f64, stage: impl Fn() -> String) {
    if device > worst.device {
        worst.device = device;
        worst.stage = stage();
    }
    worst.rounding = worst.rounding.max(rounding);
}
