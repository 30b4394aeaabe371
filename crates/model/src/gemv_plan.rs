//! Which of a decode step's products run on the gemv kernel, decided at load on
//! the model's own weights: for each weight shape and row count, the kernel (with
//! each split) and cuBLAS are timed on the device, and the kernel is used where it
//! is faster. cuBLAS's kernels for a few rows differ by shape and by GPU (on an
//! H200 they read the 4B model's gate/up weights at about 3.5 TB/s but its k and
//! v weights at about 0.4 TB/s), so no fixed rule would fit every card. A timing
//! that fails leaves that shape on cuBLAS, with a warning.

use std::collections::HashMap;

use candle_core::{Result, Tensor};

use crate::gemv::MAX_ROWS;
use crate::linear::Linear;

/// The kernel must beat cuBLAS by this factor to be used.
const MARGIN: f64 = 0.97;

/// How a linear layer runs products of few rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GemvPlan {
    /// Per row count (index rows - 1): the kernel's split, or `None` for cuBLAS.
    by_rows: [Option<usize>; MAX_ROWS],
}

impl GemvPlan {
    /// The kernel's split for a product of `rows` rows, if it runs on the kernel.
    pub fn split_for(&self, rows: usize) -> Option<usize> {
        rows.checked_sub(1)
            .and_then(|i| self.by_rows.get(i))
            .copied()
            .flatten()
    }

    /// Whether any row count runs on the kernel.
    pub fn uses_kernel(&self) -> bool {
        self.by_rows.iter().any(Option::is_some)
    }
}

/// One timed row count: microseconds of cuBLAS and of the best split.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub rows: usize,
    pub cublas_us: f64,
    pub kernel_us: f64,
    pub split: usize,
}

/// The plan for products with a weight, from its `timings` (a row count not timed
/// takes the choice of the next timed count above it; none above: cuBLAS).
pub fn plan_from(timings: &[Timing]) -> GemvPlan {
    let mut plan = GemvPlan::default();
    for rows in 1..=MAX_ROWS {
        let timed = timings
            .iter()
            .filter(|t| t.rows >= rows)
            .min_by_key(|t| t.rows);
        if let Some(t) = timed {
            if t.kernel_us < t.cublas_us * MARGIN {
                plan.by_rows[rows - 1] = Some(t.split);
            }
        }
    }
    plan
}

/// Measures each weight shape among `linears` once (on the first layer's weight
/// of that shape) and sets every layer's plan; logs each shape's choice.
pub fn apply<'a>(linears: impl Iterator<Item = &'a mut Linear>) -> Result<()> {
    let mut plans: HashMap<(usize, usize), GemvPlan> = HashMap::new();
    for linear in linears {
        let (out, k) = linear.weight().dims2()?;
        let plan = match plans.get(&(out, k)) {
            Some(plan) => *plan,
            None => {
                let timings = measure(linear.weight()).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "decode products: timing failed; cuBLAS");
                    Vec::new()
                });
                tracing::info!(
                    weight = format!("[{out}, {k}]"),
                    choice = describe(&timings),
                    "decode products: gemv kernel or cuBLAS"
                );
                let plan = plan_from(&timings);
                plans.insert((out, k), plan);
                plan
            }
        };
        linear.set_plan(plan);
    }
    Ok(())
}

/// Times cuBLAS and the kernel on `w` for 1, 4 and 8 rows (CUDA builds; the
/// empty list, and so cuBLAS everywhere, otherwise).
pub fn measure(w: &Tensor) -> Result<Vec<Timing>> {
    #[cfg(feature = "cuda")]
    {
        cuda::measure(w)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = w;
        Ok(Vec::new())
    }
}

/// One line for the log: each timed row count's choice.
pub fn describe(timings: &[Timing]) -> String {
    timings
        .iter()
        .map(|t| {
            let pick = if t.kernel_us < t.cublas_us * MARGIN {
                format!("gemv/{}", t.split)
            } else {
                "cuBLAS".to_string()
            };
            format!(
                "rows {}: {pick} (gemv {:.1} us, cuBLAS {:.1} us)",
                t.rows, t.kernel_us, t.cublas_us
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendDevice;
    use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
    use candle_core::{Device, Result, Tensor};

    use super::Timing;
    use crate::gemv::{gemv, serves};

    /// Row counts timed; a count between takes the plan of the next timed one
    /// (`plan_from`).
    const TIMED_ROWS: [usize; 3] = [1, 4, 8];
    /// Splits tried (warps summing one output).
    const SPLITS: [usize; 4] = [1, 2, 4, 8];

    /// Timed repetitions of each candidate.
    const REPS: usize = 20;

    pub fn measure(w: &Tensor) -> Result<Vec<Timing>> {
        let Device::Cuda(dev) = w.device() else {
            return Ok(Vec::new());
        };
        let (_, k) = w.dims2()?;
        // Work that keeps the GPU busy while the host queues the repetitions, so
        // that the events time the kernels and not the host launching them.
        let busy = Tensor::ones((4096, 4096), w.dtype(), w.device())?;
        let mut out = Vec::new();
        for rows in TIMED_ROWS {
            let x = Tensor::randn(0f32, 1.0, (rows, k), w.device())?.to_dtype(w.dtype())?;
            if !serves(&x, w) {
                return Ok(Vec::new());
            }
            let cublas_us = time_us(dev, &busy, || x.matmul(&w.t()?))?;
            let mut best = (f64::INFINITY, 1);
            for split in SPLITS {
                let us = time_us(dev, &busy, || gemv(&x, w, split))?;
                if us < best.0 {
                    best = (us, split);
                }
            }
            out.push(Timing {
                rows,
                cublas_us,
                kernel_us: best.0,
                split: best.1,
            });
        }
        Ok(out)
    }

    /// The mean of `REPS` runs of `run` in microseconds, by device events,
    /// after a warm-up and behind `busy` work.
    fn time_us(
        dev: &candle_core::CudaDevice,
        busy: &Tensor,
        run: impl Fn() -> Result<Tensor>,
    ) -> Result<f64> {
        let err = |e: candle_core::cuda_backend::cudarc::driver::DriverError| {
            candle_core::Error::Msg(format!("gemv timing: {e:?}"))
        };
        run()?;
        dev.synchronize()?;
        let stream = dev.cuda_stream();
        let mut pending = Vec::with_capacity(4 + REPS);
        for _ in 0..4 {
            pending.push(busy.matmul(busy)?);
        }
        let start = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(err)?;
        for _ in 0..REPS {
            pending.push(run()?);
        }
        let end = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(err)?;
        let ms = start.elapsed_ms(&end).map_err(err)?;
        drop(pending);
        Ok(f64::from(ms) * 1e3 / REPS as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(rows: usize, cublas_us: f64, kernel_us: f64, split: usize) -> Timing {
        Timing {
            rows,
            cublas_us,
            kernel_us,
            split,
        }
    }

    #[test]
    fn row_counts_between_the_timed_ones_take_the_next_timed_choice() {
        let plan = plan_from(&[
            timing(1, 10.0, 5.0, 2),
            timing(4, 10.0, 9.9, 1),
            timing(8, 10.0, 7.0, 4),
        ]);
        assert_eq!(plan.split_for(1), Some(2));
        // 9.9 is within the margin of 10: cuBLAS for rows 2 to 4.
        for rows in 2..=4 {
            assert_eq!(plan.split_for(rows), None, "rows {rows}");
        }
        for rows in 5..=8 {
            assert_eq!(plan.split_for(rows), Some(4), "rows {rows}");
        }
        assert_eq!(plan.split_for(0), None);
        assert_eq!(plan.split_for(9), None);
        assert!(plan.uses_kernel());
    }

    #[test]
    fn a_layer_with_a_plan_still_multiplies_on_the_cpu() -> Result<()> {
        use candle_core::Module;
        let cpu = &candle_core::Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (24, 16), cpu)?;
        let x = Tensor::randn(0f32, 1.0, (1, 16), cpu)?;
        let mut layer = Linear::new(w.clone());
        let want = layer.forward(&x)?;
        layer.set_plan(plan_from(&[timing(8, 10.0, 1.0, 2)]));
        let got = layer.forward(&x)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(
            diff, 0.0,
            "the kernel takes no CPU operands: the same product"
        );
        Ok(())
    }

    #[test]
    fn no_timings_leave_every_product_on_cublas() {
        let plan = plan_from(&[]);
        assert!((1..=MAX_ROWS).all(|r| plan.split_for(r).is_none()));
        assert!(!plan.uses_kernel());
        assert_eq!(describe(&[]), "");
        let w = Tensor::zeros((4, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
            .and_then(|w| measure(&w));
        assert!(w.is_ok_and(|t| t.is_empty()));
    }
}
