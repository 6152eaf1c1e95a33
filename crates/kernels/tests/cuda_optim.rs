//! The fused device optimizer steps (kernels/optim.cu) against references written here from
//! the CPU optimizer's rules, crates/nn/src/optim/sgd.rs (`SgdConfig::update`) and
//! crates/nn/src/optim/adamw.rs (`AdamWConfig::update`), over several steps in a row with
//! random parameters and gradients, odd tensor sizes, tensors that miss a step (no gradient),
//! tensors without weight decay and AdamW tensors at different step counts:
//! - an independent f64 reference (state kept in f64 across steps), within 1e-5 relative;
//! - an f32 transcription of the CPU code, bit for bit: the kernels use non-contracting,
//!   correctly rounded operations in the CPU's order, so GPU and CPU training take identical
//!   steps.
//!
//! Buffers the step must write without reading (a momentum buffer before its first step) are
//! poisoned with NaN; tensors without a gradient must keep their bits exactly.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cuda::optim::{
    AdamWHyper, AdamWSegment, FlatSegments, SgdHyper, SgdSegment, adamw_step, sgd_step,
};
use scalarize_kernels::cuda::{DeviceElem, Gpu, GpuBuffer};

/// Tensor sizes: a scalar, odd sizes, sizes straddling the 2048-element block chunks, a bias.
const LENS: &[usize] = &[1, 7, 2047, 2049, 3, 5000, 64, 1];
const STEPS: usize = 4;

fn up<T: DeviceElem>(gpu: &Gpu, v: &[T]) -> GpuBuffer<T> {
    gpu.upload(v).unwrap()
}

fn ranges() -> Vec<std::ops::Range<usize>> {
    let mut s = 0;
    LENS.iter()
        .map(|&l| {
            s += l;
            s - l..s
        })
        .collect()
}

/// Whether tensor k has a gradient at step s (some miss their first step or a later one).
fn active(k: usize, s: usize) -> bool {
    !(k + s).is_multiple_of(3) || k == 2
}

/// Weight decay applies to every other tensor (as with no_decay_norm_bias).
fn decays(k: usize) -> bool {
    k.is_multiple_of(2)
}

/// The scheduled learning rate of step s.
fn lr_at(base: f32, s: usize) -> f32 {
    base * (1.0 - 0.1 * s as f32)
}

fn random_vec(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

fn assert_close(got: &[f32], want: &[f64], scale: f64, what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * (w.abs() + scale);
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: element {i}: cuda {g} f64 reference {w}"
        );
    }
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}: element {i}: cuda {g} ({:#x}) CPU rules {w} ({:#x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Host state of the three SGD references (f32 CPU transcription, f64) for one tensor.
struct SgdRef {
    p32: Vec<f32>,
    b32: Option<Vec<f32>>,
    p64: Vec<f64>,
    b64: Option<Vec<f64>>,
}

/// `SgdConfig::update` (crates/nn/src/optim/sgd.rs) in f32, operation for operation.
fn sgd_cpu_f32(hp: &SgdHyper, decay: bool, r: &mut SgdRef, grad: &[f32]) {
    let wd = if decay { hp.weight_decay } else { 0.0 };
    let (mu, damp, lr) = (hp.momentum, 1.0 - hp.dampening, hp.lr);
    if mu == 0.0 {
        for (p, &g) in r.p32.iter_mut().zip(grad) {
            let d = g + wd * *p;
            *p += -lr * d;
        }
        return;
    }
    match &mut r.b32 {
        None => {
            let mut buf = Vec::new();
            for (p, &g) in r.p32.iter_mut().zip(grad) {
                let d = g + wd * *p;
                buf.push(d);
                let step = if hp.nesterov { d + mu * d } else { d };
                *p += -lr * step;
            }
            r.b32 = Some(buf);
        }
        Some(buf) => {
            for ((p, &g), b) in r.p32.iter_mut().zip(grad).zip(buf.iter_mut()) {
                let d = g + wd * *p;
                *b = *b * mu + damp * d;
                let step = if hp.nesterov { d + mu * *b } else { *b };
                *p += -lr * step;
            }
        }
    }
}

/// The same rules in f64 (the independent reference).
fn sgd_f64(hp: &SgdHyper, decay: bool, r: &mut SgdRef, grad: &[f32]) {
    let wd = if decay { hp.weight_decay as f64 } else { 0.0 };
    let (mu, damp, lr) = (hp.momentum as f64, 1.0 - hp.dampening as f64, hp.lr as f64);
    let first = r.b64.is_none();
    let buf = r.b64.get_or_insert_with(|| vec![0.0; grad.len()]);
    for ((p, &g), b) in r.p64.iter_mut().zip(grad).zip(buf.iter_mut()) {
        let d = g as f64 + wd * *p;
        let step = if mu == 0.0 {
            d
        } else {
            *b = if first { d } else { *b * mu + damp * d };
            if hp.nesterov { d + mu * *b } else { *b }
        };
        *p -= lr * step;
    }
    if mu == 0.0 {
        r.b64 = None;
    }
}

/// Runs STEPS SGD steps on the device and on both references; returns the device params and
/// momentum after the last step.
fn run_sgd(gpu: &Gpu, base: SgdHyper, seed: u64) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rs = ranges();
    let n: usize = LENS.iter().sum();
    let layout = FlatSegments::from_lens(gpu, LENS).unwrap();
    let p0 = random_vec(&mut rng, n, -1.0, 1.0);
    let mut refs: Vec<SgdRef> = rs
        .iter()
        .map(|r| SgdRef {
            p32: p0[r.clone()].to_vec(),
            b32: None,
            p64: p0[r.clone()].iter().map(|&x| x as f64).collect(),
            b64: None,
        })
        .collect();
    let mut params = up(gpu, &p0);
    let uses_momentum = base.momentum != 0.0;
    // Nobody has written the momentum buffer yet: the first step of each tensor must not read it.
    let mut momentum = uses_momentum.then(|| up(gpu, &vec![f32::NAN; n]));
    let mut has_momentum = vec![false; LENS.len()];
    for s in 0..STEPS {
        let hp = SgdHyper {
            lr: lr_at(base.lr, s),
            ..base
        };
        let grads = random_vec(&mut rng, n, -1.0, 1.0);
        let before_p = gpu.download(&params).unwrap();
        let before_m = momentum.as_ref().map(|m| gpu.download(m).unwrap());
        let segs: Vec<SgdSegment> = (0..LENS.len())
            .map(|k| SgdSegment {
                active: active(k, s),
                decay: decays(k),
                has_momentum: has_momentum[k],
            })
            .collect();
        let dg = up(gpu, &grads);
        sgd_step(
            gpu,
            &hp,
            &layout,
            &segs,
            &mut params,
            &dg,
            momentum.as_mut(),
        )
        .unwrap();
        let got_p = gpu.download(&params).unwrap();
        let got_m = momentum.as_ref().map(|m| gpu.download(m).unwrap());
        for (k, r) in rs.iter().enumerate() {
            let what = format!("sgd {base:?} step {s} tensor {k}");
            if !active(k, s) {
                assert_bits(&got_p[r.clone()], &before_p[r.clone()], &what);
                if let (Some(a), Some(b)) = (&got_m, &before_m) {
                    assert_bits(&a[r.clone()], &b[r.clone()], &what);
                }
                continue;
            }
            has_momentum[k] = uses_momentum;
            let g = &grads[r.clone()];
            sgd_cpu_f32(&hp, decays(k), &mut refs[k], g);
            sgd_f64(&hp, decays(k), &mut refs[k], g);
            assert_bits(&got_p[r.clone()], &refs[k].p32, &what);
            assert_close(&got_p[r.clone()], &refs[k].p64, hp.lr as f64, &what);
            if let Some(m) = &got_m {
                assert_bits(&m[r.clone()], refs[k].b32.as_ref().unwrap(), &what);
                assert_close(&m[r.clone()], refs[k].b64.as_ref().unwrap(), 1.0, &what);
            }
        }
    }
    (
        gpu.download(&params).unwrap(),
        momentum.map(|m| gpu.download(&m).unwrap()),
    )
}

#[test]
fn sgd_matches_cpu_rules() {
    let Some(gpu) = Gpu::for_tests("sgd_matches_cpu_rules") else {
        return;
    };
    let configs = [
        // The trainer's default: momentum 0.9 with L2 decay.
        SgdHyper {
            lr: 0.1,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 5e-4,
        },
        SgdHyper {
            lr: 0.05,
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
            weight_decay: 1e-2,
        },
        SgdHyper {
            lr: 0.2,
            momentum: 0.8,
            dampening: 0.3,
            nesterov: false,
            weight_decay: 0.0,
        },
        // Plain SGD: no buffer at all.
        SgdHyper {
            lr: 0.1,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 1e-2,
        },
    ];
    for (i, hp) in configs.into_iter().enumerate() {
        let a = run_sgd(&gpu, hp, 100 + i as u64);
        let b = run_sgd(&gpu, hp, 100 + i as u64);
        assert_eq!(
            a.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.0.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{hp:?}: two runs differ"
        );
    }
}

/// Host state of the AdamW references for one tensor.
struct AdamRef {
    step: u64,
    p32: Vec<f32>,
    m32: Vec<f32>,
    v32: Vec<f32>,
    p64: Vec<f64>,
    m64: Vec<f64>,
    v64: Vec<f64>,
}

/// `AdamWConfig::update` (crates/nn/src/optim/adamw.rs) in f32 with its f64 bias corrections,
/// operation for operation.
fn adamw_cpu_f32(hp: &AdamWHyper, decay: bool, r: &mut AdamRef, grad: &[f32]) {
    let t = r.step as f64;
    let lr = hp.lr;
    if decay && hp.weight_decay != 0.0 {
        let keep = (1.0 - lr as f64 * hp.weight_decay as f64) as f32;
        for p in r.p32.iter_mut() {
            *p *= keep;
        }
    }
    let (b1, b2) = (hp.beta1 as f64, hp.beta2 as f64);
    let bias1 = 1.0 - b1.powf(t);
    let bias2_sqrt = (1.0 - b2.powf(t)).sqrt() as f32;
    let step_size = (lr as f64 / bias1) as f32;
    let w1 = 1.0 - hp.beta1;
    let w2 = 1.0 - hp.beta2;
    for (((p, &g), m), v) in r
        .p32
        .iter_mut()
        .zip(grad)
        .zip(r.m32.iter_mut())
        .zip(r.v32.iter_mut())
    {
        *m += w1 * (g - *m);
        *v = *v * hp.beta2 + w2 * g * g;
        let denom = v.sqrt() / bias2_sqrt + hp.eps;
        *p += -step_size * (*m / denom);
    }
}

/// The same rules entirely in f64 (the independent reference).
fn adamw_f64(hp: &AdamWHyper, decay: bool, r: &mut AdamRef, grad: &[f32]) {
    let t = r.step as i32;
    let (lr, b1, b2, eps) = (
        hp.lr as f64,
        hp.beta1 as f64,
        hp.beta2 as f64,
        hp.eps as f64,
    );
    let wd = if decay { hp.weight_decay as f64 } else { 0.0 };
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    for (((p, &g), m), v) in r
        .p64
        .iter_mut()
        .zip(grad)
        .zip(r.m64.iter_mut())
        .zip(r.v64.iter_mut())
    {
        let g = g as f64;
        *p *= 1.0 - lr * wd;
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *p -= lr / c1 * *m / ((*v).sqrt() / c2.sqrt() + eps);
    }
}

/// Runs STEPS AdamW steps from a state as if resumed from a checkpoint (random moments, each
/// tensor at its own step count); returns the device params after the last step.
fn run_adamw(gpu: &Gpu, base: AdamWHyper, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rs = ranges();
    let n: usize = LENS.iter().sum();
    let layout = FlatSegments::from_lens(gpu, LENS).unwrap();
    let p0 = random_vec(&mut rng, n, -1.0, 1.0);
    let m0 = random_vec(&mut rng, n, -0.1, 0.1);
    let v0 = random_vec(&mut rng, n, 0.0, 0.05);
    // Tensor 0 and 1 start fresh (zero moments), the others at various step counts.
    let start_steps: Vec<u64> = (0..LENS.len())
        .map(|k| [0, 0, 3, 100, 1, 7, 20, 2][k % 8])
        .collect();
    let mut refs: Vec<AdamRef> = rs
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let fresh = start_steps[k] == 0;
            let m: Vec<f32> = if fresh {
                vec![0.0; r.len()]
            } else {
                m0[r.clone()].to_vec()
            };
            let v: Vec<f32> = if fresh {
                vec![0.0; r.len()]
            } else {
                v0[r.clone()].to_vec()
            };
            AdamRef {
                step: start_steps[k],
                p32: p0[r.clone()].to_vec(),
                p64: p0[r.clone()].iter().map(|&x| x as f64).collect(),
                m64: m.iter().map(|&x| x as f64).collect(),
                v64: v.iter().map(|&x| x as f64).collect(),
                m32: m,
                v32: v,
            }
        })
        .collect();
    let mut params = up(gpu, &p0);
    let mut exp_avg = up(
        gpu,
        &refs.iter().flat_map(|r| r.m32.clone()).collect::<Vec<_>>(),
    );
    let mut exp_avg_sq = up(
        gpu,
        &refs.iter().flat_map(|r| r.v32.clone()).collect::<Vec<_>>(),
    );
    for s in 0..STEPS {
        let hp = AdamWHyper {
            lr: lr_at(base.lr, s),
            ..base
        };
        let grads = random_vec(&mut rng, n, -1.0, 1.0);
        let before: Vec<Vec<f32>> = [&params, &exp_avg, &exp_avg_sq]
            .iter()
            .map(|b| gpu.download(b).unwrap())
            .collect();
        let segs: Vec<AdamWSegment> = (0..LENS.len())
            .map(|k| AdamWSegment {
                active: active(k, s),
                decay: decays(k),
                step: refs[k].step + u64::from(active(k, s)),
            })
            .collect();
        let dg = up(gpu, &grads);
        adamw_step(
            gpu,
            &hp,
            &layout,
            &segs,
            &mut params,
            &dg,
            &mut exp_avg,
            &mut exp_avg_sq,
        )
        .unwrap();
        let got: Vec<Vec<f32>> = [&params, &exp_avg, &exp_avg_sq]
            .iter()
            .map(|b| gpu.download(b).unwrap())
            .collect();
        for (k, r) in rs.iter().enumerate() {
            let what = format!("adamw {base:?} step {s} tensor {k}");
            if !active(k, s) {
                for (a, b) in got.iter().zip(&before) {
                    assert_bits(&a[r.clone()], &b[r.clone()], &what);
                }
                continue;
            }
            let rf = &mut refs[k];
            rf.step += 1;
            let g = &grads[r.clone()];
            adamw_cpu_f32(&hp, decays(k), rf, g);
            adamw_f64(&hp, decays(k), rf, g);
            assert_bits(&got[0][r.clone()], &rf.p32, &what);
            assert_bits(&got[1][r.clone()], &rf.m32, &what);
            assert_bits(&got[2][r.clone()], &rf.v32, &what);
            // Each step moves a parameter by about lr: compare relative to that scale.
            assert_close(&got[0][r.clone()], &rf.p64, hp.lr as f64, &what);
            assert_close(&got[1][r.clone()], &rf.m64, 1e-2, &what);
            assert_close(&got[2][r.clone()], &rf.v64, 1e-3, &what);
        }
    }
    gpu.download(&params).unwrap()
}

#[test]
fn adamw_matches_cpu_rules() {
    let Some(gpu) = Gpu::for_tests("adamw_matches_cpu_rules") else {
        return;
    };
    let configs = [
        // torch.optim.AdamW's defaults.
        AdamWHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        },
        AdamWHyper {
            lr: 0.05,
            beta1: 0.5,
            beta2: 0.9,
            eps: 1e-6,
            weight_decay: 0.1,
        },
        AdamWHyper {
            lr: 0.01,
            beta1: 0.0,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
        },
    ];
    for (i, hp) in configs.into_iter().enumerate() {
        let a = run_adamw(&gpu, hp, 200 + i as u64);
        let b = run_adamw(&gpu, hp, 200 + i as u64);
        assert_eq!(
            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            "{hp:?}: two runs differ"
        );
    }
}

#[test]
fn optim_rejects_bad_input() {
    let Some(gpu) = Gpu::for_tests("optim_rejects_bad_input") else {
        return;
    };
    let e = FlatSegments::new(&gpu, &[]).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = FlatSegments::new(&gpu, &[3, 3]).unwrap_err();
    assert!(e.to_string().contains("segment_ends[1]"), "{e}");
    let e = FlatSegments::from_lens(&gpu, &[2, 0]).unwrap_err();
    assert!(e.to_string().contains("segment_ends[1]"), "{e}");

    let layout = FlatSegments::from_lens(&gpu, &[2, 3]).unwrap();
    assert_eq!((layout.len(), layout.num_segments()), (5, 2));
    let mut p = up(&gpu, &[1.0f32; 5]);
    let g = up(&gpu, &[1.0f32; 5]);
    let mut m = up(&gpu, &[0.0f32; 5]);
    let mut short = up(&gpu, &[0.0f32; 4]);
    let seg = SgdSegment {
        active: true,
        decay: true,
        has_momentum: false,
    };
    let hp = SgdHyper {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let e = sgd_step(&gpu, &hp, &layout, &[seg; 2], &mut short, &g, Some(&mut m)).unwrap_err();
    assert!(e.to_string().contains("`params`"), "{e}");
    let e = sgd_step(&gpu, &hp, &layout, &[seg; 2], &mut p, &g, Some(&mut short)).unwrap_err();
    assert!(e.to_string().contains("`momentum`"), "{e}");
    let e = sgd_step(&gpu, &hp, &layout, &[seg; 3], &mut p, &g, Some(&mut m)).unwrap_err();
    assert!(e.to_string().contains("`segments`"), "{e}");
    let e = sgd_step(&gpu, &hp, &layout, &[seg; 2], &mut p, &g, None).unwrap_err();
    assert!(e.to_string().contains("needs a momentum buffer"), "{e}");
    let bad = SgdHyper {
        nesterov: true,
        dampening: 0.1,
        ..hp
    };
    let e = sgd_step(&gpu, &bad, &layout, &[seg; 2], &mut p, &g, Some(&mut m)).unwrap_err();
    assert!(e.to_string().contains("Nesterov"), "{e}");
    let bad = SgdHyper {
        momentum: -0.5,
        ..hp
    };
    let e = sgd_step(&gpu, &bad, &layout, &[seg; 2], &mut p, &g, Some(&mut m)).unwrap_err();
    assert!(e.to_string().contains("momentum must be >= 0"), "{e}");

    let ahp = AdamWHyper {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let mut v = up(&gpu, &[0.0f32; 5]);
    let aseg = AdamWSegment {
        active: true,
        decay: true,
        step: 1,
    };
    let zero = AdamWSegment { step: 0, ..aseg };
    let e = adamw_step(
        &gpu,
        &ahp,
        &layout,
        &[aseg, zero],
        &mut p,
        &g,
        &mut m,
        &mut v,
    )
    .unwrap_err();
    assert!(e.to_string().contains("segments[1].step = 0"), "{e}");
    let e = adamw_step(
        &gpu, &ahp, &layout, &[aseg; 2], &mut p, &g, &mut m, &mut short,
    )
    .unwrap_err();
    assert!(e.to_string().contains("`exp_avg_sq`"), "{e}");
    let bad = AdamWHyper { beta2: 1.0, ..ahp };
    let e = adamw_step(&gpu, &bad, &layout, &[aseg; 2], &mut p, &g, &mut m, &mut v).unwrap_err();
    assert!(e.to_string().contains("betas"), "{e}");
    // An inactive tensor needs no valid step count.
    let idle = AdamWSegment {
        active: false,
        decay: false,
        step: 0,
    };
    adamw_step(
        &gpu,
        &ahp,
        &layout,
        &[idle, aseg],
        &mut p,
        &g,
        &mut m,
        &mut v,
    )
    .unwrap();
    let p_host = gpu.download(&p).unwrap();
    assert_eq!(&p_host[..2], &[1.0, 1.0]);
    assert!(p_host[2..].iter().all(|&x| x < 1.0));
}
