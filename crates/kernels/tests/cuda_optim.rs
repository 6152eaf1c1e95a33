//! The multi-tensor device optimizer (kernels/optim.cu, `cuda::optim::MultiTensor`) against
//! references written here from the CPU optimizer's rules, crates/nn/src/optim/sgd.rs
//! (`SgdConfig::update`), crates/nn/src/optim/adamw.rs (`AdamWConfig::update`) and
//! crates/nn/src/optim/clip.rs (`clip_grad_norm`), over several steps in a row with random
//! parameters and gradients, tensors of very different sizes (1 element to several chunks)
//! each in its own allocation, gradients alternately in one flat buffer at offsets and in
//! separate buffers, a clip factor on some steps, tensors that miss a step (no gradient, no
//! row), tensors without weight decay and AdamW tensors at different step counts:
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
    AdamWHyper, AdamWSegment, MultiOptim, MultiTensor, SgdHyper, SgdSegment, TensorAddrs,
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

/// The clip factor of step s (1 = not clipping).
fn scale_at(s: usize) -> f32 {
    [1.0, 0.37, 0.81, 1.0][s % 4]
}

/// The gradients as the CPU's clip_grad_norm leaves them: scaled in f32 when clipping.
fn clipped(grads: &[f32], c: f32) -> Vec<f32> {
    grads
        .iter()
        .map(|&g| if c < 1.0 { g * c } else { g })
        .collect()
}

/// A step's gradients on the device: one flat buffer with tensors at offsets (even steps, as
/// `Model::step_flat_device` passes them) or one buffer per tensor (odd steps, as backward's).
enum DevGrads {
    Flat(GpuBuffer<f32>),
    Split(Vec<GpuBuffer<f32>>),
}

impl DevGrads {
    fn new(gpu: &Gpu, grads: &[f32], s: usize) -> Self {
        if s.is_multiple_of(2) {
            DevGrads::Flat(up(gpu, grads))
        } else {
            DevGrads::Split(ranges().into_iter().map(|r| up(gpu, &grads[r])).collect())
        }
    }

    /// Tensor k's gradient address.
    fn addr(&self, k: usize) -> u64 {
        match self {
            DevGrads::Flat(b) => b.device_address() + 4 * ranges()[k].start as u64,
            DevGrads::Split(v) => v[k].device_address(),
        }
    }
}

/// Σ g² in f64 over the active tensors of step s (the norm kernel's reference).
fn sq_norm_ref(grads: &[f32], s: usize) -> f64 {
    ranges()
        .into_iter()
        .enumerate()
        .filter(|&(k, _)| active(k, s))
        .flat_map(|(_, r)| grads[r].iter().map(|&g| g as f64 * g as f64))
        .sum()
}

/// Checks the norm launch against the f64 reference (relative 1e-12: only the summation
/// order differs) and that a second launch gives the same bits (the ticket counter resets).
fn check_norm(gpu: &Gpu, table: &mut MultiTensor, grads: &[f32], s: usize, what: &str) {
    let want = sq_norm_ref(grads, s);
    let got = table.grad_sq_norm(gpu).unwrap();
    assert!(
        (got - want).abs() <= 1e-12 * want,
        "{what}: sum of squares {got} f64 reference {want}"
    );
    let again = table.grad_sq_norm(gpu).unwrap();
    assert_eq!(got.to_bits(), again.to_bits(), "{what}: second norm launch");
}

/// Runs STEPS SGD steps on the device (one launch for all tensors) and on both references;
/// returns the device params and momentum after the last step.
fn run_sgd(gpu: &Gpu, base: SgdHyper, seed: u64) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let rs = ranges();
    let n: usize = LENS.iter().sum();
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
    let mut params: Vec<GpuBuffer<f32>> = rs.iter().map(|r| up(gpu, &p0[r.clone()])).collect();
    let uses_momentum = base.momentum != 0.0;
    // Nobody has written the momentum buffers yet: the first step of each tensor must not
    // read them.
    let mut momentum: Vec<Option<GpuBuffer<f32>>> = LENS
        .iter()
        .map(|&l| uses_momentum.then(|| up(gpu, &vec![f32::NAN; l])))
        .collect();
    let mut has_momentum = vec![false; LENS.len()];
    let mut table = MultiTensor::new(gpu).unwrap();
    for s in 0..STEPS {
        let hp = SgdHyper {
            lr: lr_at(base.lr, s),
            ..base
        };
        let grads = random_vec(&mut rng, n, -1.0, 1.0);
        let dg = DevGrads::new(gpu, &grads, s);
        let before_p: Vec<Vec<f32>> = params.iter().map(|b| gpu.download(b).unwrap()).collect();
        let before_m: Vec<Option<Vec<f32>>> = momentum
            .iter()
            .map(|m| m.as_ref().map(|m| gpu.download(m).unwrap()))
            .collect();
        table.begin(MultiOptim::Sgd(hp)).unwrap();
        for k in (0..LENS.len()).filter(|&k| active(k, s)) {
            let t = TensorAddrs {
                param: params[k].device_address_mut(),
                grad: dg.addr(k),
                state: [
                    momentum[k].as_mut().map_or(0, |m| m.device_address_mut()),
                    0,
                ],
                len: LENS[k],
            };
            let seg = SgdSegment {
                decay: decays(k),
                has_momentum: has_momentum[k],
            };
            // SAFETY: every buffer is a distinct live allocation of LENS[k] elements (the
            // gradient: a slice of the flat buffer) that outlives the launches below.
            unsafe { table.push_sgd(t, seg) }.unwrap();
        }
        check_norm(
            gpu,
            &mut table,
            &grads,
            s,
            &format!("sgd {base:?} step {s}"),
        );
        table.step(gpu, scale_at(s)).unwrap();
        let g_used = clipped(&grads, scale_at(s));
        for (k, r) in rs.iter().enumerate() {
            let what = format!("sgd {base:?} step {s} tensor {k}");
            let got_p = gpu.download(&params[k]).unwrap();
            let got_m = momentum[k].as_ref().map(|m| gpu.download(m).unwrap());
            if !active(k, s) {
                assert_bits(&got_p, &before_p[k], &what);
                if let (Some(a), Some(b)) = (&got_m, &before_m[k]) {
                    assert_bits(a, b, &what);
                }
                continue;
            }
            has_momentum[k] = uses_momentum;
            let g = &g_used[r.clone()];
            sgd_cpu_f32(&hp, decays(k), &mut refs[k], g);
            sgd_f64(&hp, decays(k), &mut refs[k], g);
            assert_bits(&got_p, &refs[k].p32, &what);
            assert_close(&got_p, &refs[k].p64, hp.lr as f64, &what);
            if let Some(m) = &got_m {
                assert_bits(m, refs[k].b32.as_ref().unwrap(), &what);
                assert_close(m, refs[k].b64.as_ref().unwrap(), 1.0, &what);
            }
        }
    }
    let flat = |bufs: Vec<&GpuBuffer<f32>>| -> Vec<f32> {
        bufs.into_iter()
            .flat_map(|b| gpu.download(b).unwrap())
            .collect()
    };
    let m = uses_momentum.then(|| flat(momentum.iter().flatten().collect()));
    (flat(params.iter().collect()), m)
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
            let pick = |src: &[f32]| {
                if fresh {
                    vec![0.0; r.len()]
                } else {
                    src[r.clone()].to_vec()
                }
            };
            let (m, v) = (pick(&m0), pick(&v0));
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
    // Per tensor: [param, exp_avg, exp_avg_sq], each its own allocation.
    let mut bufs: Vec<[GpuBuffer<f32>; 3]> = refs
        .iter()
        .map(|r| [up(gpu, &r.p32), up(gpu, &r.m32), up(gpu, &r.v32)])
        .collect();
    let mut table = MultiTensor::new(gpu).unwrap();
    for s in 0..STEPS {
        let hp = AdamWHyper {
            lr: lr_at(base.lr, s),
            ..base
        };
        let grads = random_vec(&mut rng, n, -1.0, 1.0);
        let dg = DevGrads::new(gpu, &grads, s);
        let down = |b: &[GpuBuffer<f32>; 3]| -> Vec<Vec<f32>> {
            b.iter().map(|x| gpu.download(x).unwrap()).collect()
        };
        let before: Vec<Vec<Vec<f32>>> = bufs.iter().map(down).collect();
        table.begin(MultiOptim::AdamW(hp)).unwrap();
        for k in (0..LENS.len()).filter(|&k| active(k, s)) {
            let [p, m, v] = &mut bufs[k];
            let t = TensorAddrs {
                param: p.device_address_mut(),
                grad: dg.addr(k),
                state: [m.device_address_mut(), v.device_address_mut()],
                len: LENS[k],
            };
            let seg = AdamWSegment {
                decay: decays(k),
                step: refs[k].step + 1,
            };
            // SAFETY: as in run_sgd.
            unsafe { table.push_adamw(t, seg) }.unwrap();
        }
        check_norm(
            gpu,
            &mut table,
            &grads,
            s,
            &format!("adamw {base:?} step {s}"),
        );
        table.step(gpu, scale_at(s)).unwrap();
        let g_used = clipped(&grads, scale_at(s));
        for (k, r) in rs.iter().enumerate() {
            let what = format!("adamw {base:?} step {s} tensor {k}");
            let got = down(&bufs[k]);
            if !active(k, s) {
                for (a, b) in got.iter().zip(&before[k]) {
                    assert_bits(a, b, &what);
                }
                continue;
            }
            let rf = &mut refs[k];
            rf.step += 1;
            let g = &g_used[r.clone()];
            adamw_cpu_f32(&hp, decays(k), rf, g);
            adamw_f64(&hp, decays(k), rf, g);
            assert_bits(&got[0], &rf.p32, &what);
            assert_bits(&got[1], &rf.m32, &what);
            assert_bits(&got[2], &rf.v32, &what);
            // Each step moves a parameter by about lr: compare relative to that scale.
            assert_close(&got[0], &rf.p64, hp.lr as f64, &what);
            assert_close(&got[1], &rf.m64, 1e-2, &what);
            assert_close(&got[2], &rf.v64, 1e-3, &what);
        }
    }
    bufs.iter()
        .flat_map(|b| gpu.download(&b[0]).unwrap())
        .collect()
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

/// The norm of many tiny tensors (more chunks than the last block has threads, so its final
/// loop strides) against the f64 reference, bit-identical on repeat; an empty table is 0.
#[test]
fn grad_norm_of_many_tensors() {
    let Some(gpu) = Gpu::for_tests("optim_grad_norm_many") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(300);
    let lens: Vec<usize> = (0..300).map(|k| 1 + k % 5).collect();
    let mut params: Vec<GpuBuffer<f32>> = lens.iter().map(|&l| up(&gpu, &vec![0.5; l])).collect();
    let grads: Vec<Vec<f32>> = lens
        .iter()
        .map(|&l| random_vec(&mut rng, l, -3.0, 3.0))
        .collect();
    let dgrads: Vec<GpuBuffer<f32>> = grads.iter().map(|g| up(&gpu, g)).collect();
    let mut table = MultiTensor::new(&gpu).unwrap();
    let hp = SgdHyper {
        lr: 0.1,
        momentum: 0.0,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    table.begin(MultiOptim::Sgd(hp)).unwrap();
    assert_eq!(table.grad_sq_norm(&gpu).unwrap(), 0.0, "empty table");
    for (k, p) in params.iter_mut().enumerate() {
        let t = TensorAddrs {
            param: p.device_address_mut(),
            grad: dgrads[k].device_address(),
            state: [0, 0],
            len: lens[k],
        };
        let seg = SgdSegment {
            decay: false,
            has_momentum: false,
        };
        // SAFETY: distinct live buffers of lens[k] elements that outlive the launches.
        unsafe { table.push_sgd(t, seg) }.unwrap();
    }
    assert_eq!(table.len(), 300);
    let want: f64 = grads.iter().flatten().map(|&g| g as f64 * g as f64).sum();
    let got = table.grad_sq_norm(&gpu).unwrap();
    assert!((got - want).abs() <= 1e-12 * want, "{got} vs {want}");
    for _ in 0..2 {
        assert_eq!(table.grad_sq_norm(&gpu).unwrap().to_bits(), got.to_bits());
    }
    // Plain SGD with a clip factor: p - lr * (g * c) per element, in f32.
    table.step(&gpu, 0.5).unwrap();
    for (k, p) in params.iter().enumerate() {
        let want: Vec<f32> = grads[k].iter().map(|&g| 0.5 + -0.1 * (g * 0.5)).collect();
        assert_bits(&gpu.download(p).unwrap(), &want, &format!("tensor {k}"));
    }
}

#[test]
fn optim_rejects_bad_input() {
    let Some(gpu) = Gpu::for_tests("optim_rejects_bad_input") else {
        return;
    };
    let mut p = up(&gpu, &[1.0f32; 5]);
    let g = up(&gpu, &[1.0f32; 5]);
    let mut m = up(&gpu, &[0.0f32; 5]);
    let mut v = up(&gpu, &[0.0f32; 5]);
    let hp = SgdHyper {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        nesterov: false,
        weight_decay: 0.0,
    };
    let ahp = AdamWHyper {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let seg = SgdSegment {
        decay: true,
        has_momentum: false,
    };
    let aseg = AdamWSegment {
        decay: true,
        step: 1,
    };
    let t = TensorAddrs {
        param: p.device_address_mut(),
        grad: g.device_address(),
        state: [m.device_address_mut(), v.device_address_mut()],
        len: 5,
    };
    let mut table = MultiTensor::new(&gpu).unwrap();
    let err = |r: Result<(), scalarize_kernels::KernelError>, want: &str| {
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "expected `{want}` in: {e}");
    };
    // SAFETY (every push below): p, g, m and v are live 5-element buffers that outlive the
    // launches; the rejected pushes launch nothing.
    err(unsafe { table.push_sgd(t, seg) }, "not begun for SGD");
    err(table.step(&gpu, 1.0), "no step begun");
    let bad = SgdHyper {
        nesterov: true,
        dampening: 0.1,
        ..hp
    };
    err(table.begin(MultiOptim::Sgd(bad)), "Nesterov");
    let bad = SgdHyper {
        momentum: -0.5,
        ..hp
    };
    err(table.begin(MultiOptim::Sgd(bad)), "momentum must be >= 0");
    let bad = AdamWHyper { beta2: 1.0, ..ahp };
    err(table.begin(MultiOptim::AdamW(bad)), "betas");
    table.begin(MultiOptim::Sgd(hp)).unwrap();
    err(unsafe { table.push_adamw(t, aseg) }, "not begun for AdamW");
    let no_state = TensorAddrs { state: [0, 0], ..t };
    err(unsafe { table.push_sgd(no_state, seg) }, "state[0] address");
    let odd = TensorAddrs {
        grad: t.grad + 2,
        ..t
    };
    err(unsafe { table.push_sgd(odd, seg) }, "grad address");
    table.begin(MultiOptim::AdamW(ahp)).unwrap();
    let zero = AdamWSegment { step: 0, ..aseg };
    err(unsafe { table.push_adamw(t, zero) }, "step = 0");
    let half = TensorAddrs {
        state: [t.state[0], 0],
        ..t
    };
    err(unsafe { table.push_adamw(half, aseg) }, "state[1] address");
    // Nothing was pushed by the failed calls; a length-0 tensor adds no row.
    let empty = TensorAddrs { len: 0, ..no_state };
    unsafe { table.push_adamw(empty, aseg) }.unwrap();
    assert!(table.is_empty());
    unsafe { table.push_adamw(t, aseg) }.unwrap();
    assert_eq!(table.len(), 1);
    err(table.step(&gpu, f32::NAN), "grad_scale must be finite");
    table.step(&gpu, 1.0).unwrap();
    assert!(gpu.download(&p).unwrap().iter().all(|&x| x < 1.0));
    // A step ends the table: its addresses are never launched again.
    err(table.step(&gpu, 1.0), "no step begun");
}
