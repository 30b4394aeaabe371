use candle_core::{IndexOp, D};

use super::*;
use crate::emulated::Dev;

fn rand(shape: &[usize]) -> Result<Tensor> {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
}

#[test]
fn qkv_heads_splits_rows_as_the_separate_projections_would() -> Result<()> {
    let (images, patches, heads, d) = (2, 3, 4, 8);
    let h = heads * d;
    let (x, b) = (rand(&[images * patches, 3 * h])?, rand(&[3 * h])?);
    let split = Heads {
        patches,
        heads,
        head_dim: d,
        scale: 0.25,
    };
    let (q, k, v) = reference::qkv_heads(&x, &b, split)?;
    for (i, (got, scale)) in [(q, 0.25), (k, 1.0), (v, 1.0)].into_iter().enumerate() {
        let part = x
            .narrow(D::Minus1, i * h, h)?
            .broadcast_add(&b.narrow(0, i * h, h)?)?;
        let want = (part
            .reshape((images, patches, heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            * scale)?;
        assert_eq!(got.dims(), [images, heads, patches, d]);
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "part {i}: {diff}");
    }
    Ok(())
}

/// `x`, `bias` and `res` through `plan` on the kernel emulator, as many blocks as
/// it says or `blocks`.
fn emulated<S: crate::launch::Scalars>(
    mut plan: Launch<S>,
    blocks: Option<u32>,
    inputs: &[&Tensor],
) -> Result<Dev> {
    if let Some(b) = blocks {
        plan.grid.0 = b;
    }
    let out = Dev::zeros(inputs[0].dtype(), inputs[0].elem_count())?;
    let mut buffers = inputs
        .iter()
        .map(|t| Dev::of(t))
        .collect::<Result<Vec<_>>>()?;
    buffers.push(out);
    crate::emulated::run(&plan, &buffers.iter().collect::<Vec<_>>())?;
    Ok(buffers.pop().expect("the output"))
}

#[test]
fn the_kernels_with_their_launches_match_the_reference_when_emulated() -> Result<()> {
    let err = crate::ops::max_relative_error;
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let tol = crate::ops::fused_tolerance(dtype);
        let t = |shape: &[usize], std: f32| {
            Tensor::randn(0f32, std, shape, &Device::Cpu)?.to_dtype(dtype)
        };
        let (rows, cols) = (40, 136);
        let (x, b) = (t(&[rows, cols], 2.0)?, t(&[cols], 1.0)?);
        // The plan's grid, and a single block striding over everything.
        for blocks in [None, Some(1)] {
            let plan = epilogue_launch(dtype, x.dims(), b.dims(), x.dims(), Mode::Gelu)?;
            let got = emulated(plan, blocks, &[&x, &b, &x])?.tensor((rows, cols))?;
            let e = err(&got, &reference::gelu(&x, &b)?)?;
            assert!(e <= tol, "gelu {dtype:?}: {e}");
            for res_rows in [rows, rows / 4] {
                let r = t(&[res_rows, cols], 3.0)?;
                let plan = epilogue_launch(dtype, x.dims(), b.dims(), r.dims(), Mode::Residual)?;
                let got = emulated(plan, blocks, &[&x, &b, &r])?.tensor((rows, cols))?;
                let e = err(&got, &reference::residual(&x, &b, &r)?)?;
                assert!(e <= tol, "residual of {res_rows} rows, {dtype:?}: {e}");
            }
        }
        let h = Heads {
            patches: 20,
            heads: 4,
            head_dim: 16,
            scale: 0.25,
        };
        let (x, b) = (t(&[40, 3 * 64], 2.0)?, t(&[3 * 64], 1.0)?);
        let plan = qkv_launch(dtype, x.dims(), b.dims(), h)?;
        let got = emulated(plan, None, &[&x, &b])?.tensor((3, 2, 4, 20, 16))?;
        let want = reference::qkv_heads(&x, &b, h)?;
        for (i, w) in [want.0, want.1, want.2].iter().enumerate() {
            let e = err(&got.get(i)?, w)?;
            assert!(e <= tol, "q/k/v part {i}, {dtype:?}: {e}");
        }
    }
    Ok(())
}

#[test]
fn launches_refuse_what_the_kernels_cannot_take() {
    let bf = DType::BF16;
    assert!(epilogue_launch(bf, &[4, 12], &[12], &[4, 12], Mode::Gelu).is_err());
    assert!(epilogue_launch(bf, &[4, 16], &[8], &[4, 16], Mode::Gelu).is_err());
    assert!(epilogue_launch(bf, &[6, 16], &[16], &[4, 16], Mode::Residual).is_err());
    assert!(epilogue_launch(bf, &[6, 16], &[16], &[3, 16], Mode::Residual).is_ok());
    assert!(epilogue_launch(DType::U8, &[6, 16], &[16], &[6, 16], Mode::Gelu).is_err());
    let h = Heads {
        patches: 5,
        heads: 2,
        head_dim: 8,
        scale: 1.0,
    };
    assert!(qkv_launch(bf, &[10, 48], &[48], h).is_ok());
    assert!(qkv_launch(bf, &[12, 48], &[48], h).is_err());
    assert!(qkv_launch(
        DType::F32,
        &[10, 48],
        &[48],
        Heads {
            head_dim: 6,
            heads: 4,
            ..h
        }
    )
    .is_err());
}

#[test]
fn references_are_the_plain_formulas() -> Result<()> {
    let (x, b, r) = (rand(&[3, 16])?, rand(&[16])?, rand(&[3, 16])?);
    let sum = x.broadcast_add(&b)?;
    let res = reference::residual(&x, &b, &r)?;
    assert_eq!(
        (res - (&r + &sum)?)?.abs()?.max_all()?.to_scalar::<f32>()?,
        0.0
    );
    let g = reference::gelu(&x, &b)?;
    let (s, gv) = (
        sum.i((1, 5))?.to_scalar::<f32>()?,
        g.i((1, 5))?.to_scalar::<f32>()?,
    );
    let exact = 0.5 * s * (1.0 + (0.797_884_6 * (s + 0.044715 * s * s * s)).tanh());
    assert!((gv - exact).abs() < 1e-5, "{gv} vs {exact}");
    Ok(())
}

#[test]
fn widths_must_be_whole_vectors() {
    let siglip = Widths {
        hidden: 1152,
        intermediate: 4304,
        heads: 16,
    };
    assert!(fits(siglip, DType::BF16) && fits(siglip, DType::F32));
    let odd_head = Widths {
        heads: 12,
        ..siglip
    }; // head_dim 96: fits
    assert!(fits(odd_head, DType::BF16));
    let narrow_head = Widths {
        hidden: 48,
        heads: 8,
        ..siglip
    }; // head_dim 6
    assert!(!fits(narrow_head, DType::BF16) && !fits(narrow_head, DType::F32));
    let odd_inter = Widths {
        intermediate: 4302,
        ..siglip
    };
    assert!(!fits(odd_inter, DType::BF16));
    assert!(!fits(siglip, DType::U32));
}

#[test]
fn the_kernels_are_off_on_the_cpu() -> Result<()> {
    let w = Widths {
        hidden: 64,
        intermediate: 128,
        heads: 4,
    };
    assert!(!usable(&Device::Cpu, DType::F32, w));
    let x = rand(&[2, 128])?;
    assert!(gelu(&x, &rand(&[128])?).is_err());
    Ok(())
}
