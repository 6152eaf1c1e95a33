//! CUDA fused attention core (forward and backward) against its CPU twin on fresh random
//! inputs, outputs poisoned with NaN before each run; runs on the CUDA emulator without a GPU.

mod common;

use common::{bits, poisoned};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu::{self, AttentionShape};
use scalarize_kernels::cuda::Gpu;
use scalarize_kernels::cuda::attention::{attention_backward, attention_forward};
use scalarize_kernels::cuda::softmax::WARP_MAX_DIM;

fn shape(n: usize, t: usize, heads: usize, hd: usize) -> AttentionShape {
    AttentionShape { n, t, heads, hd }
}

/// Largest |v|, at least `floor`.
fn max_abs(v: &[f32], floor: f32) -> f32 {
    v.iter().fold(floor, |a, &x| a.max(x.abs()))
}

/// |got − want| ≤ rel·|want| + abs, elementwise.
fn close(got: &[f32], want: &[f32], (rel, abs): (f32, f32), what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = rel * w.abs() + abs;
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: cuda {g} cpu {w} (tol {tol})"
        );
    }
}

/// Runs forward and backward of shape `s` on the device and the CPU and compares them.
fn check_case(gpu: &Gpu, rng: &mut StdRng, s: AttentionShape, scale: f32) {
    let what = format!("{s:?} scale={scale}");
    let qkv: Vec<f32> = (0..s.qkv_len())
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let dout: Vec<f32> = (0..s.out_len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut want_p = vec![0.0; s.probs_len()];
    let mut want_o = vec![0.0; s.out_len()];
    cpu::attention_forward(s, scale, &qkv, &mut want_p, &mut want_o).unwrap();
    let mut want_d = vec![0.0; s.qkv_len()];
    cpu::attention_backward(s, scale, &qkv, &want_p, &dout, &mut want_d).unwrap();

    let (dq, dgo) = (gpu.upload(&qkv).unwrap(), gpu.upload(&dout).unwrap());
    let mut p = poisoned(gpu, s.probs_len());
    let mut o = poisoned(gpu, s.out_len());
    attention_forward(gpu, s, scale, &dq, &mut p, &mut o).unwrap();
    let (got_p, got_o) = (gpu.download(&p).unwrap(), gpu.download(&o).unwrap());
    // Besides the usual 1e-5 relative: the logits scale·q·k are float dot products
    // that the CPU's gemm and the device's (cuBLAS, or f64 on the emulator) round
    // differently, by a few ε·scale·Σ|q_c k_c| ≤ 2ε·scale·hd·max|qkv|² in practice; the
    // softmax turns that absolute logit error into a relative error of the
    // probabilities (Δp = p·(δ_j − Σ p δ)), which every later product carries. With
    // scale 6 and hd 8 this is ~5e-5 (measured: 2e-6), hence the extra `lerr` terms.
    let m = max_abs(&qkv, 1.0);
    let lerr = 2.0 * f32::EPSILON * scale * s.hd as f32 * m * m;
    close(
        &got_p,
        &want_p,
        (1e-5 + lerr, 1e-6),
        &format!("probs {what}"),
    );
    // out = P·v: terms up to max |v|.
    close(
        &got_o,
        &want_o,
        (1e-5, (1e-6 + lerr) * m),
        &format!("out {what}"),
    );

    // The backward from the device's own probs, as a training step would run it.
    let mut dqkv = poisoned(gpu, s.qkv_len());
    attention_backward(gpu, s, scale, &dq, &p, &dgo, &mut dqkv).unwrap();
    let got_d = gpu.download(&dqkv).unwrap();
    // dS = scale·P(dP − Σ P dP) cancels and dq, dk, dv sum t such terms: errors are
    // relative to the largest gradient rather than to each element (measured: 1e-6).
    let big = max_abs(&want_d, 1e-3);
    close(
        &got_d,
        &want_d,
        (1e-5, (2e-6 + lerr) * big),
        &format!("dqkv {what}"),
    );

    // Reproducible bit for bit.
    let mut p2 = poisoned(gpu, s.probs_len());
    let mut o2 = poisoned(gpu, s.out_len());
    attention_forward(gpu, s, scale, &dq, &mut p2, &mut o2).unwrap();
    assert_eq!(bits(&gpu.download(&p2).unwrap()), bits(&got_p), "{what}");
    assert_eq!(bits(&gpu.download(&o2).unwrap()), bits(&got_o), "{what}");
    let mut d2 = poisoned(gpu, s.qkv_len());
    attention_backward(gpu, s, scale, &dq, &p2, &dgo, &mut d2).unwrap();
    assert_eq!(bits(&gpu.download(&d2).unwrap()), bits(&got_d), "{what}");
}

#[test]
fn attention_matches_cpu() {
    let Some(gpu) = Gpu::for_tests("attention_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(51);
    // Several heads; sequence lengths 1, 5 and 17; a head size of 1; odd sizes throughout.
    let cases = [
        shape(1, 1, 1, 1),
        shape(2, 1, 3, 2),
        shape(2, 5, 3, 4),
        shape(3, 5, 1, 3),
        shape(1, 17, 2, 8),
        shape(2, 17, 4, 5),
    ];
    for s in cases {
        // 1/sqrt(hd) as in a transformer, and a large scale for peaked (near one-hot) rows.
        for scale in [1.0 / (s.hd as f32).sqrt(), 6.0] {
            check_case(&gpu, &mut rng, s, scale);
        }
    }
}

#[test]
fn attention_long_sequences_match_cpu() {
    let Some(gpu) = Gpu::for_tests("attention_long_sequences_match_cpu") else {
        return;
    };
    // t > WARP_MAX_DIM: the softmax rows (in place on probs and dP) take the block-per-row path.
    const { assert!(1030 > WARP_MAX_DIM) };
    let mut rng = StdRng::seed_from_u64(52);
    check_case(&gpu, &mut rng, shape(1, 1030, 1, 2), 0.7);
}

#[test]
fn attention_rejects_bad_shapes() {
    let Some(gpu) = Gpu::for_tests("attention_rejects_bad_shapes") else {
        return;
    };
    let s = shape(1, 2, 1, 2);
    let qkv = gpu.upload(&vec![0.5f32; s.qkv_len()]).unwrap();
    let short = gpu.upload(&[0.0f32; 3]).unwrap();
    let mut p = poisoned(&gpu, s.probs_len());
    let mut o = poisoned(&gpu, s.out_len());
    let mut d = poisoned(&gpu, s.qkv_len());
    let err = |r: Result<(), scalarize_kernels::KernelError>| r.unwrap_err().to_string();

    let e = err(attention_forward(&gpu, s, 1.0, &short, &mut p, &mut o));
    assert!(
        e.contains("buffer `qkv` has 3 elements, expected 12"),
        "{e}"
    );
    let mut p3 = poisoned(&gpu, 3);
    let e = err(attention_forward(&gpu, s, 1.0, &qkv, &mut p3, &mut o));
    assert!(e.contains("buffer `probs` has 3"), "{e}");
    let mut o3 = poisoned(&gpu, 3);
    let e = err(attention_forward(&gpu, s, 1.0, &qkv, &mut p, &mut o3));
    assert!(e.contains("buffer `out` has 3"), "{e}");
    let e = err(attention_forward(
        &gpu,
        shape(1, 0, 1, 2),
        1.0,
        &qkv,
        &mut p,
        &mut o,
    ));
    assert!(e.contains("dimension `t` is 0"), "{e}");

    let e = err(attention_backward(&gpu, s, 1.0, &qkv, &p, &short, &mut d));
    assert!(e.contains("buffer `dout` has 3"), "{e}");
    let e = err(attention_backward(&gpu, s, 1.0, &qkv, &short, &o, &mut d));
    assert!(e.contains("buffer `probs` has 3"), "{e}");
    let mut d3 = poisoned(&gpu, 3);
    let e = err(attention_backward(&gpu, s, 1.0, &qkv, &p, &o, &mut d3));
    assert!(e.contains("buffer `dqkv` has 3"), "{e}");
    let e = err(attention_backward(&gpu, s, f32::NAN, &qkv, &p, &o, &mut d));
    assert!(e.contains("scale NaN is not finite"), "{e}");
    // Nothing was written by the refused calls.
    for b in [&p, &o, &d] {
        assert!(gpu.download(b).unwrap().iter().all(|v| v.is_nan()));
    }
}
