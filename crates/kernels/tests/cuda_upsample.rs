//! CUDA upsampling (kernels/upsample.cu) against `cpu::upsample` on fresh random inputs,
//! outputs poisoned with NaN before each run. Runs on the CUDA emulator without a GPU.
//!
//! Tolerance: the taps come from the CPU's own arithmetic, the forward evaluates the CPU's
//! expression with every product rounded (never fused into an FMA), and the backward gathers
//! visit each input's contributions in the CPU's scatter order, so today the results agree
//! bit for bit; the tests allow |cuda − cpu| ≤ 1e-6·(|cpu| + 1) (a few ulps of inputs in
//! [-1, 1]) so that a reordering of the CPU's sums does not break them. Two device runs must
//! be bit-identical.

mod common;

use common::{bits, close, gpu_or_skip, poisoned, rand_vec};
use rand::SeedableRng;
use rand::rngs::StdRng;
use scalarize_kernels::cuda::{Gpu, GpuBuffer, upsample};
use scalarize_kernels::{Result, cpu};

/// (n, c, h, w, oh, ow).
const CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (2, 3, 4, 5, 8, 10), // exact 2x (nearest's o >> 1 rule)
    (1, 2, 3, 7, 5, 11), // non-integer scales
    (2, 1, 6, 5, 3, 4),  // downsampling: some inputs get no gradient
    (1, 1, 1, 1, 3, 2),  // one input pixel
    (1, 2, 5, 4, 5, 4),  // same size
    (1, 1, 7, 3, 7, 9),  // one axis unchanged
];

type CpuFn = fn(usize, usize, usize, usize, usize, usize, &[f32], &mut [f32]) -> Result<()>;
type GpuFn = fn(
    &Gpu,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    &GpuBuffer<f32>,
    &mut GpuBuffer<f32>,
) -> Result<()>;

/// Segmentation-head sizes, run only on a real GPU (the emulator would take minutes).
const GPU_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (2, 16, 32, 48, 64, 96),
    (2, 8, 28, 28, 224, 224),
    (1, 4, 57, 31, 100, 70),
];

/// Checks one mode's forward and backward against the CPU, twice each (reproducibility).
fn check_mode(gpu: &Gpu, seed: u64, name: &str, cpu_fns: (CpuFn, CpuFn), gpu_fns: (GpuFn, GpuFn)) {
    let mut rng = StdRng::seed_from_u64(seed);
    let extra = if gpu.is_emulated() {
        &[][..]
    } else {
        GPU_CASES
    };
    for &(n, c, h, w, oh, ow) in CASES.iter().chain(extra) {
        let (small, big) = (n * c * h * w, n * c * oh * ow);
        let x = rand_vec(&mut rng, small);
        let dy = rand_vec(&mut rng, big);
        let mut want_y = vec![f32::NAN; big];
        (cpu_fns.0)(n, c, h, w, oh, ow, &x, &mut want_y).unwrap();
        let mut want_dx = vec![f32::NAN; small];
        (cpu_fns.1)(n, c, h, w, oh, ow, &dy, &mut want_dx).unwrap();
        let (dxin, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());
        let mut first: Option<(Vec<u32>, Vec<u32>)> = None;
        for run in 0..2 {
            let what = format!("{name} n={n} c={c} {h}x{w} -> {oh}x{ow} run {run}");
            let mut y = poisoned(gpu, big);
            (gpu_fns.0)(gpu, n, c, h, w, oh, ow, &dxin, &mut y).unwrap();
            let got_y = gpu.download(&y).unwrap();
            close(&got_y, &want_y, &format!("y {what}"));
            let mut dx = poisoned(gpu, small);
            (gpu_fns.1)(gpu, n, c, h, w, oh, ow, &ddy, &mut dx).unwrap();
            let got_dx = gpu.download(&dx).unwrap();
            close(&got_dx, &want_dx, &format!("dx {what}"));
            let now = (bits(&got_y), bits(&got_dx));
            match &first {
                None => first = Some(now),
                Some(f) => assert!(f == &now, "{what}: two runs differ"),
            }
        }
    }
}

#[test]
fn upsample_bilinear2d_matches_cpu() {
    let Some(gpu) = gpu_or_skip("upsample_bilinear2d_matches_cpu") else {
        return;
    };
    check_mode(
        &gpu,
        81,
        "bilinear",
        (
            cpu::upsample_bilinear2d_forward,
            cpu::upsample_bilinear2d_backward,
        ),
        (
            upsample::upsample_bilinear2d_forward,
            upsample::upsample_bilinear2d_backward,
        ),
    );
}

#[test]
fn upsample_nearest2d_matches_cpu() {
    let Some(gpu) = gpu_or_skip("upsample_nearest2d_matches_cpu") else {
        return;
    };
    check_mode(
        &gpu,
        82,
        "nearest",
        (
            cpu::upsample_nearest2d_forward,
            cpu::upsample_nearest2d_backward,
        ),
        (
            upsample::upsample_nearest2d_forward,
            upsample::upsample_nearest2d_backward,
        ),
    );
}

#[test]
fn upsample_rejects_bad_shapes() {
    let Some(gpu) = gpu_or_skip("upsample_rejects_bad_shapes") else {
        return;
    };
    let x = gpu.upload(&vec![0.5f32; 2 * 3 * 4 * 5]).unwrap();
    let mut y = poisoned(&gpu, 2 * 3 * 8 * 10);
    let mut y_bad = poisoned(&gpu, 2 * 3 * 8 * 10 - 1);
    let s_ = |e: scalarize_kernels::KernelError| e.to_string();

    let e = s_(
        upsample::upsample_bilinear2d_forward(&gpu, 2, 3, 4, 5, 8, 10, &x, &mut y_bad).unwrap_err(),
    );
    assert!(
        e.contains("cuda::upsample_bilinear2d_forward") && e.contains("`y`"),
        "{e}"
    );
    let e =
        s_(upsample::upsample_nearest2d_forward(&gpu, 2, 3, 4, 6, 8, 10, &x, &mut y).unwrap_err());
    assert!(e.contains("`x`") && e.contains("w=6"), "{e}");
    let mut dx = poisoned(&gpu, 2 * 3 * 4 * 5);
    let e = s_(
        upsample::upsample_bilinear2d_backward(&gpu, 2, 3, 4, 5, 8, 10, &y_bad, &mut dx)
            .unwrap_err(),
    );
    assert!(e.contains("`dy`"), "{e}");
    let e = s_(
        upsample::upsample_nearest2d_backward(&gpu, 2, 3, 4, 5, 8, 10, &y, &mut y_bad).unwrap_err(),
    );
    assert!(e.contains("`dx`"), "{e}");
    let e =
        s_(upsample::upsample_nearest2d_forward(&gpu, 2, 3, 4, 5, 0, 10, &x, &mut y).unwrap_err());
    assert!(e.contains("`oh` is 0"), "{e}");
    let e = s_(
        upsample::upsample_bilinear2d_backward(&gpu, 0, 3, 4, 5, 8, 10, &y, &mut dx).unwrap_err(),
    );
    assert!(e.contains("`n` is 0"), "{e}");
}
