use super::*;

#[test]
fn every_model_kernel_is_compiled_in() {
    let names: Vec<&str> = kernels().collect();
    for k in [
        "bias_epilogue_bf16",
        "qkv_heads_f32",
        "softmax_f16",
        "argmax_f32",
        "emu_block_sum",
    ] {
        assert!(names.contains(&k), "{k} missing from {names:?}");
    }
}

#[test]
fn a_block_reduction_with_early_leavers_sums_each_block() -> Result<(), EmuError> {
    let n: i32 = 300;
    let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let (x, out) = (Buffer::from_slice(&input), Buffer::<f32>::zeroed(3));
    let mut a = Args::new();
    a.buffer(&x).buffer(&out).scalar(n);
    unsafe { launch("emu_block_sum", (3, 1, 1), (128, 1, 1), &a)? };
    let want: Vec<f32> = input.chunks(128).map(|c| c.iter().sum()).collect();
    assert_eq!(out.to_vec(), want);
    Ok(())
}

#[test]
fn lanes_holding_the_same_value_find_each_other() -> Result<(), EmuError> {
    for modulus in [1u32, 3, 32] {
        let out = Buffer::<u32>::zeroed(2 * 64);
        let mut a = Args::new();
        a.buffer(&out).scalar(modulus as i32);
        unsafe { launch("emu_match", (1, 1, 1), (64, 1, 1), &a)? };
        let got = out.to_vec();
        for t in 0..64u32 {
            let peers: u32 = (0..32)
                .filter(|l| (t / 32 * 32 + l) % modulus == t % modulus)
                .map(|l| 1u32 << l)
                .sum();
            let first = peers.trailing_zeros();
            let want = [peers, first * 100 + peers.count_ones()];
            assert_eq!(
                got[2 * t as usize..2 * t as usize + 2],
                want,
                "modulus {modulus}, thread {t}"
            );
        }
    }
    Ok(())
}

#[test]
fn shuffles_exchange_within_a_warp() -> Result<(), EmuError> {
    for mask in [1, 4, 16] {
        let out = Buffer::<i32>::zeroed(64);
        let mut a = Args::new();
        a.buffer(&out).scalar(mask);
        unsafe { launch("emu_shuffle", (1, 1, 1), (64, 1, 1), &a)? };
        let want: Vec<i32> = (0..64).map(|t| t ^ mask).collect();
        assert_eq!(out.to_vec(), want, "mask {mask}");
    }
    Ok(())
}

#[test]
fn threads_and_blocks_are_numbered_as_on_the_gpu() -> Result<(), EmuError> {
    let (grid, block) = ((2, 3, 1), (4, 2, 3));
    let threads = 2 * 3 * 4 * 2 * 3;
    let out = Buffer::<u32>::zeroed(6 * threads);
    let mut a = Args::new();
    a.buffer(&out);
    unsafe { launch("emu_places", grid, block, &a)? };
    let got = out.to_vec();
    let mut i = 0;
    for by in 0..3 {
        for bx in 0..2 {
            for tz in 0..3 {
                for ty in 0..2 {
                    for tx in 0..4 {
                        assert_eq!(&got[6 * i..6 * i + 6], &[tx, ty, tz, bx, by, 0]);
                        i += 1;
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn a_barrier_no_thread_can_pass_is_a_deadlock_error() {
    let out = Buffer::<i32>::zeroed(64);
    let mut a = Args::new();
    a.buffer(&out);
    let err = unsafe { launch("emu_deadlock", (1, 1, 1), (64, 1, 1), &a) };
    assert!(matches!(err, Err(EmuError::Launch { .. })), "{err:?}");
}

#[test]
fn wrong_argument_counts_and_sizes_are_refused() {
    let out = Buffer::<i32>::zeroed(64);
    let mut a = Args::new();
    a.buffer(&out);
    let err = unsafe { launch("emu_shuffle", (1, 1, 1), (32, 1, 1), &a) };
    assert!(matches!(err, Err(EmuError::Arguments { .. })), "{err:?}");
    a.scalar(1u64);
    let err = unsafe { launch("emu_shuffle", (1, 1, 1), (32, 1, 1), &a) };
    assert!(matches!(err, Err(EmuError::Arguments { .. })), "{err:?}");
    let err = unsafe { launch("no_such_kernel", (1, 1, 1), (32, 1, 1), &a) };
    assert!(matches!(err, Err(EmuError::UnknownKernel(_))), "{err:?}");
}

#[test]
fn half_conversions_round_to_nearest_even_as_cuda() -> Result<(), EmuError> {
    let mut input = vec![
        0.0f32,
        -0.0,
        1.0,
        65504.0,
        65520.0,
        1e-8,
        6e-8,
        3.0e-5,
        f32::INFINITY,
    ];
    let mut s = 0x1234_5678u32;
    for _ in 0..4000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        input.push(f32::from_bits(s & 0xbfff_ffff) * 1e-3);
    }
    let n = input.len();
    let x = Buffer::from_slice(&input);
    let (h, b, back) = (
        Buffer::<u16>::zeroed(n),
        Buffer::<u16>::zeroed(n),
        Buffer::<f32>::zeroed(2 * n),
    );
    let mut a = Args::new();
    a.buffer(&x)
        .buffer(&h)
        .buffer(&b)
        .buffer(&back)
        .scalar(n as i32);
    unsafe { launch("emu_to_half", (1, 1, 1), (128, 1, 1), &a)? };
    let (h, b, back) = (h.to_vec(), b.to_vec(), back.to_vec());
    for (i, &v) in input.iter().enumerate() {
        let (wh, wb) = (half::f16::from_f32(v), half::bf16::from_f32(v));
        if v.is_finite() || v.is_infinite() {
            assert_eq!(h[i], wh.to_bits(), "f16 of {v:e}");
            assert_eq!(b[i], wb.to_bits(), "bf16 of {v:e}");
            assert_eq!(back[2 * i].to_bits(), wh.to_f32().to_bits());
            assert_eq!(back[2 * i + 1].to_bits(), wb.to_f32().to_bits());
        }
    }
    Ok(())
}
