//! CUDA ReLU and GELU, forward and backward, against their CPU twins on fresh random inputs,
//! outputs poisoned with NaN before each run. Without a GPU the kernels run on the CUDA
//! emulator.

mod common;

use common::{bits, gpu_or_skip, poisoned, same_error};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::activation as act;

/// Values in [-8, 8) with a few edge cases mixed in at the front.
fn inputs(rng: &mut StdRng, n: usize, specials: &[f32]) -> Vec<f32> {
    (0..n)
        .map(|i| match specials.get(i) {
            Some(&s) => s,
            None => rng.random_range(-8.0f32..8.0),
        })
        .collect()
}

/// Lengths with tails around the 256-thread blocks.
const LENS: &[usize] = &[1, 9, 255, 257, 3001];

#[test]
fn relu_matches_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("relu_matches_cpu_bit_for_bit") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(11);
    let specials = [
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-40,
        -1e-40,
    ];
    for &n in LENS {
        let x = inputs(&mut rng, n, &specials);
        let dy = inputs(&mut rng, n, &[]);
        let (dx_in, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());

        let mut want = vec![0.0; n];
        cpu::relu_forward(&x, &mut want).unwrap();
        let mut got = poisoned(&gpu, n);
        act::relu_forward(&gpu, &dx_in, &mut got).unwrap();
        assert_eq!(
            bits(&gpu.download(&got).unwrap()),
            bits(&want),
            "forward n={n}"
        );

        let mut want = vec![0.0; n];
        cpu::relu_backward(&x, &dy, &mut want).unwrap();
        let mut got = poisoned(&gpu, n);
        act::relu_backward(&gpu, &dx_in, &ddy, &mut got).unwrap();
        assert_eq!(
            bits(&gpu.download(&got).unwrap()),
            bits(&want),
            "backward n={n}"
        );
    }
}

#[test]
fn gelu_matches_cpu_and_is_reproducible() {
    let Some(gpu) = gpu_or_skip("gelu_matches_cpu_and_is_reproducible") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(12);
    let specials = [
        0.0, -0.0, 1e-4, -1e-4, 3.5, -3.5, 6.0, -6.0, 9.5, -9.5, -20.0,
    ];
    // The CPU's Φ comes from Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7 in erf, so
    // ≤ 7.5e-8 in Φ) and its own exp, the device's from erfcf and expf (CUDA documents up to
    // 4 ulps for erfcf): y = x·Φ and Φ + x·φ may differ by a few 1e-7 times (1 + |x|), plus
    // f32 rounding of the result. On the emulator the worst case over [-10, 10] in steps of
    // 1e-4 used 0.36 (forward) and 0.73 (backward) of a 3e-7 scale; 5e-7 leaves room for the
    // GPU's libdevice.
    let tol = |x: f32, scale: f32, want: f32| {
        5e-7 * scale.abs() as f64 * (1.0 + x.abs() as f64) + 2e-7 * want.abs() as f64
    };
    for &n in LENS {
        let x = inputs(&mut rng, n, &specials);
        let dy = inputs(&mut rng, n, &[]);
        let (dx_in, ddy) = (gpu.upload(&x).unwrap(), gpu.upload(&dy).unwrap());

        let mut want = vec![0.0; n];
        cpu::gelu_forward(&x, &mut want).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut got = poisoned(&gpu, n);
            act::gelu_forward(&gpu, &dx_in, &mut got).unwrap();
            runs.push(gpu.download(&got).unwrap());
        }
        assert_eq!(bits(&runs[0]), bits(&runs[1]), "forward n={n}: runs differ");
        for i in 0..n {
            let (g, w) = (runs[0][i], want[i]);
            assert!(
                (g as f64 - w as f64).abs() <= tol(x[i], 1.0, w),
                "gelu_forward n={n} x={}: cuda {g} cpu {w}",
                x[i]
            );
        }

        let mut want = vec![0.0; n];
        cpu::gelu_backward(&x, &dy, &mut want).unwrap();
        let mut runs = Vec::new();
        for _ in 0..2 {
            let mut got = poisoned(&gpu, n);
            act::gelu_backward(&gpu, &dx_in, &ddy, &mut got).unwrap();
            runs.push(gpu.download(&got).unwrap());
        }
        assert_eq!(
            bits(&runs[0]),
            bits(&runs[1]),
            "backward n={n}: runs differ"
        );
        for i in 0..n {
            let (g, w) = (runs[0][i], want[i]);
            assert!(
                (g as f64 - w as f64).abs() <= tol(x[i], dy[i], w),
                "gelu_backward n={n} x={} dy={}: cuda {g} cpu {w}",
                x[i],
                dy[i]
            );
        }
    }
}

#[test]
fn gelu_is_the_erf_form_not_tanh() {
    let Some(gpu) = gpu_or_skip("gelu_is_the_erf_form_not_tanh") else {
        return;
    };
    // At x = 1 the erf form gives 0.841345, the tanh approximation 0.841192.
    let dx = gpu.upload(&[1.0f32, -2.0]).unwrap();
    let mut y = poisoned(&gpu, 2);
    act::gelu_forward(&gpu, &dx, &mut y).unwrap();
    let y = gpu.download(&y).unwrap();
    let exact = |x: f64| 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2));
    assert!((y[0] as f64 - exact(1.0)).abs() < 1e-6, "{}", y[0]);
    assert!((y[1] as f64 - exact(-2.0)).abs() < 1e-6, "{}", y[1]);
}

#[test]
fn bad_shapes_are_refused_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_refused_like_the_cpu") else {
        return;
    };
    let (h3, h4) = (vec![1.0f32; 3], vec![1.0f32; 4]);
    let (d3, d4) = (gpu.upload(&h3).unwrap(), gpu.upload(&h4).unwrap());
    let d0 = gpu.zeros::<f32>(0).unwrap();
    let mut o4 = poisoned(&gpu, 4);
    let mut h = vec![0.0f32; 4];
    same_error(
        act::relu_forward(&gpu, &d3, &mut o4).unwrap_err(),
        cpu::relu_forward(&h3, &mut h).unwrap_err(),
    );
    same_error(
        act::relu_backward(&gpu, &d4, &d3, &mut o4).unwrap_err(),
        cpu::relu_backward(&h4, &h3, &mut h).unwrap_err(),
    );
    same_error(
        act::gelu_forward(&gpu, &d0, &mut o4).unwrap_err(),
        cpu::gelu_forward(&[], &mut h).unwrap_err(),
    );
    same_error(
        act::gelu_backward(&gpu, &d3, &d4, &mut o4).unwrap_err(),
        cpu::gelu_backward(&h3, &h4, &mut h).unwrap_err(),
    );
    assert!(gpu.download(&o4).unwrap().iter().all(|v| v.is_nan()));
}
