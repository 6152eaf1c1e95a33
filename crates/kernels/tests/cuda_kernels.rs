//! CUDA kernels against their CPU twins on fresh random inputs, outputs poisoned with NaN
//! before each run. Without a usable GPU the tests run the same kernels on the CUDA emulator
//! (smaller inputs); with `SCALARIZE_REQUIRE_GPU=1` (set by scripts/gpu-check.sh) a missing GPU
//! is a failure.

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu::{self, TaskLayout, WeightedBceInput, WeightedCeInput};
use scalarize_kernels::cuda::{
    self, CudaBceInput, CudaCeInput, DeviceElem, Gpu, GpuBuffer, weighted_loss,
};

mod common;

const IGNORE: i64 = -100;

/// The GPU (or, without one, the CUDA emulator), or None after printing why the test is
/// skipped.
fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

fn up<T: DeviceElem>(gpu: &Gpu, v: &[T]) -> GpuBuffer<T> {
    gpu.upload(v).unwrap()
}

fn down<T: DeviceElem>(gpu: &Gpu, d: &GpuBuffer<T>) -> Vec<T> {
    gpu.download(d).unwrap()
}

#[test]
fn devices_reports_without_panicking() {
    match cuda::devices() {
        Ok(list) => {
            for d in &list {
                assert!(!d.name.is_empty());
                assert!(d.compute_capability.0 >= 3);
                assert!(d.total_memory > 0);
                eprintln!("device {}: {d:?}", d.ordinal);
            }
        }
        Err(why) => eprintln!("no CUDA: {why}"),
    }
    let s = cuda::library_status();
    eprintln!("libraries: {s:?}");
}

#[test]
fn grad_gram_matches_cpu() {
    let Some(gpu) = gpu_or_skip("grad_gram_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(21);
    let cases: &[(usize, usize)] = &[
        (2, 1),
        (3, 63),
        (5, 4097),
        (8, 100_003),
        (16, 33_333),
        (17, 5_000),
        (33, 2_049),
        (64, 70_001),
        (2, 3_000_017),
    ];
    // The emulator runs every GPU thread on the CPU: keep its inputs small.
    let small = gpu.is_emulated();
    for &(t, p) in cases {
        let p = if small && t * p > 200_000 {
            1 + p / 20
        } else {
            p
        };
        let g: Vec<f32> = (0..t * p).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut ends: Vec<usize> = (0..rng.random_range(0..20))
            .map(|_| rng.random_range(1..=p))
            .collect();
        ends.push(p);
        if p > 200 {
            ends.extend([64, 128]); // bias-sized segments next to big ones
        }
        ends.sort_unstable();
        ends.dedup();
        let want = cpu::grad_gram(&g, t, p, &ends).unwrap();
        let dg = up(&gpu, &g);
        let l = ends.len();
        let mut out = up(&gpu, &vec![f64::NAN; l * t * t]);
        cuda::grad_gram_device(&gpu, &dg, t, p, &ends, &mut out).unwrap();
        let got = down(&gpu, &out);
        for seg in 0..l {
            for i in 0..t {
                for j in 0..t {
                    let w = want.dot(seg, i, j);
                    let v = got[seg * t * t + i * t + j];
                    let scale = (want.dot(seg, i, i) * want.dot(seg, j, j)).sqrt();
                    assert!(
                        (v - w).abs() <= 1e-5 * scale.max(f64::MIN_POSITIVE),
                        "t={t} p={p} seg {seg} ({i},{j}): cuda {v} cpu {w}"
                    );
                }
            }
        }
        // The host-returning wrapper agrees and is reproducible bit for bit.
        let a = cuda::grad_gram(&gpu, &dg, t, p, &ends).unwrap();
        let b = cuda::grad_gram(&gpu, &dg, t, p, &ends).unwrap();
        assert_eq!(a, b, "t={t} p={p}: two runs differ");
        assert_eq!(&a.segments.concat(), &got);
    }
}

/// The largest P on the device: T = 3 x P = 10^9 (12 GB; 3e9 elements, past 2^31, so
/// 32-bit element indices anywhere would show), against the CPU Gram. On a real GPU only (the
/// emulator runs every GPU thread on the CPU); skipped with a printed reason there or where
/// host or device memory is short.
#[test]
fn grad_gram_matches_cpu_at_one_billion_columns() {
    const T: usize = 3;
    const P: usize = 1_000_000_000;
    let test = "grad_gram_matches_cpu_at_one_billion_columns";
    let Some(gpu) = gpu_or_skip(test) else {
        return;
    };
    if gpu.is_emulated() {
        eprintln!("SKIPPED {test}: needs a real GPU (12 GB of input)");
        return;
    }
    let host = common::mem_available_bytes();
    let device = cuda::devices()
        .ok()
        .and_then(|d| d.first().map(|d| d.total_memory));
    let bytes = (T * P * 4) as u64;
    if host.is_none_or(|h| h < bytes + (4 << 30))
        || device.is_none_or(|d| (d as u64) < bytes + (2 << 30))
    {
        eprintln!(
            "SKIPPED {test}: needs {bytes} bytes and more on host and device: host {host:?}, device {device:?}"
        );
        return;
    }
    let g = common::hashed_rows(T, P);
    let ends = [64, 128, 2_000_128, P - 7, P];
    let want = cpu::grad_gram(&g, T, P, &ends).unwrap();
    let dg = up(&gpu, &g);
    drop(g);
    let got = cuda::grad_gram(&gpu, &dg, T, P, &ends).unwrap();
    for (l, (m, w)) in got.segments.iter().zip(&want.segments).enumerate() {
        common::assert_gram_close(m, w, T, 1e-5, &format!("segment {l}"));
    }
    common::assert_gram_close(&got.total, &want.total, T, 1e-5, "total");
    let cos = want.total_cosine(0, 1);
    assert!(
        (cos - 0.6).abs() < 1e-3,
        "cpu cosine {cos}, expected about 0.6"
    );
}

#[test]
fn grad_gram_rejects_bad_input() {
    let Some(gpu) = gpu_or_skip("grad_gram_rejects_bad_input") else {
        return;
    };
    let dg = up(&gpu, &vec![1.0f32; 65 * 2]);
    let e = cuda::grad_gram(&gpu, &dg, 65, 2, &[2]).unwrap_err();
    assert!(e.to_string().contains("at most 64"), "{e}");
    let e = cuda::grad_gram(&gpu, &dg, 2, 65, &[3, 2]).unwrap_err();
    assert!(e.to_string().contains("segment_ends[1]"), "{e}");
}

/// Max |a - b| over a task's gradient block, relative to its scale p_t / n_t.
fn check_grad(
    got: &[f32],
    want: &[f32],
    layout: &TaskLayout,
    n: usize,
    scales: &[f64],
    what: &str,
) {
    let w = layout.width();
    for i in 0..n {
        for (t, &scale) in scales.iter().enumerate() {
            for c in layout.range(t) {
                let (g, r) = (got[i * w + c] as f64, want[i * w + c] as f64);
                let tol = 1e-5 * scale.max(r.abs()) + 1e-12;
                assert!(
                    (g - r).abs() <= tol,
                    "{what}: row {i} task {t} col {c}: cuda {g} cpu {r}"
                );
            }
        }
    }
}

fn check_losses(got: &cpu::WeightedLossOutput, want: &cpu::WeightedLossOutput, what: &str) {
    assert_eq!(got.counts, want.counts, "{what}");
    for (t, (a, b)) in got.task_loss.iter().zip(&want.task_loss).enumerate() {
        assert!(
            ((a - b) as f64).abs() <= 1e-5 * (b.abs() as f64) + 1e-7,
            "{what}: task {t} loss cuda {a} cpu {b}"
        );
    }
    assert!(((got.total - want.total) as f64).abs() <= 1e-5 * (want.total.abs() as f64) + 1e-7);
}

#[test]
fn weighted_ce_matches_cpu() {
    let Some(gpu) = gpu_or_skip("weighted_ce_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(22);
    let cases: &[(usize, &[usize])] = &[
        (1, &[3, 2]),
        (37, &[10, 1, 5, 33]),
        (1001, &[1000]),
        (257, &[2; 40]),
        (4096, &[7, 100, 65]),
    ];
    let small = gpu.is_emulated();
    for &(n, sizes) in cases {
        let n = if small { n.min(300) } else { n };
        for (extreme, use_mask) in [(false, false), (true, true), (false, true)] {
            let layout = TaskLayout::from_sizes(sizes).unwrap();
            let (t, w) = (layout.num_tasks(), layout.width());
            let logits: Vec<f32> = (0..n * w)
                .map(|_| {
                    if extreme && rng.random_bool(0.2) {
                        if rng.random_bool(0.5) { 1e4 } else { -1e4 }
                    } else {
                        rng.random_range(-8.0f32..8.0)
                    }
                })
                .collect();
            let targets: Vec<i64> = (0..n * t)
                .map(|k| {
                    if rng.random_bool(0.1) {
                        IGNORE
                    } else {
                        rng.random_range(0..sizes[k % t] as i64)
                    }
                })
                .collect();
            // Task 0 is empty when masked (a domain absent from the batch).
            let mask: Vec<u8> = (0..n * t)
                .map(|k| u8::from(k % t != 0 && rng.random_bool(0.7)))
                .collect();
            let weights: Vec<f32> = (0..t).map(|_| rng.random_range(0.05f32..2.0)).collect();
            let cpu_in = WeightedCeInput {
                layout: &layout,
                n,
                logits: &logits,
                targets: &targets,
                mask: use_mask.then_some(&mask[..]),
                weights: &weights,
                ignore_index: IGNORE,
            };
            let mut want_grad = vec![0.0f32; n * w];
            let want = cpu::weighted_ce_loss(&cpu_in, Some(&mut want_grad)).unwrap();
            let (dl, dt, dm) = (up(&gpu, &logits), up(&gpu, &targets), up(&gpu, &mask));
            let cu_in = CudaCeInput {
                layout: &layout,
                n,
                logits: &dl,
                targets: &dt,
                mask: use_mask.then_some(&dm),
                weights: &weights,
                ignore_index: IGNORE,
            };
            let mut dgrad = up(&gpu, &vec![f32::NAN; n * w]);
            let got = cuda::weighted_ce_loss(&gpu, &cu_in, Some(&mut dgrad)).unwrap();
            let what = format!("ce n={n} sizes={sizes:?} extreme={extreme} mask={use_mask}");
            check_losses(&got, &want, &what);
            let scales: Vec<f64> = (0..t)
                .map(|k| weights[k] as f64 / want.counts[k].max(1) as f64)
                .collect();
            check_grad(&down(&gpu, &dgrad), &want_grad, &layout, n, &scales, &what);
            // Loss-only call, and reproducibility.
            let only = cuda::weighted_ce_loss(&gpu, &cu_in, None).unwrap();
            assert_eq!(only, got, "{what}: loss-only call differs");
            // The training path: targets counted on the host, results left on the device, the
            // same bits as the checked call.
            let counts = weighted_loss::check_ce_targets(
                &layout,
                n,
                &targets,
                use_mask.then_some(&mask[..]),
                IGNORE,
            )
            .unwrap();
            assert_eq!(counts, want.counts, "{what}: host counts");
            let mut dgrad2 = up(&gpu, &vec![f32::NAN; n * w]);
            let dev =
                weighted_loss::weighted_ce_loss_device(&gpu, &cu_in, Some(&mut dgrad2)).unwrap();
            device_output_matches(&gpu, &dev, &got, &what);
            assert_eq!(
                down(&gpu, &dgrad2),
                down(&gpu, &dgrad),
                "{what}: device-path gradient"
            );
        }
    }
}

#[test]
fn weighted_ce_reports_bad_targets() {
    let Some(gpu) = gpu_or_skip("weighted_ce_reports_bad_targets") else {
        return;
    };
    let layout = TaskLayout::from_sizes(&[3, 2]).unwrap();
    let (dl, dt) = (up(&gpu, &[0.5f32; 10]), up(&gpu, &[0i64, 1, 2, 7]));
    let input = CudaCeInput {
        layout: &layout,
        n: 2,
        logits: &dl,
        targets: &dt,
        mask: None,
        weights: &[1.0, 1.0],
        ignore_index: IGNORE,
    };
    let e = cuda::weighted_ce_loss(&gpu, &input, None).unwrap_err();
    assert!(e.to_string().contains("targets[row 1, task 1]"), "{e}");
}

#[test]
fn weighted_bce_reports_bad_targets() {
    let Some(gpu) = gpu_or_skip("weighted_bce_reports_bad_targets") else {
        return;
    };
    let layout = TaskLayout::from_sizes(&[3, 2]).unwrap();
    let targets = [0.0f32, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0];
    let (dl, dt) = (up(&gpu, &[0.5f32; 10]), up(&gpu, &targets));
    let input = CudaBceInput {
        layout: &layout,
        n: 2,
        logits: &dl,
        targets: &dt,
        mask: None,
        weights: &[1.0, 1.0],
    };
    let e = cuda::weighted_bce_loss(&gpu, &input, None).unwrap_err();
    assert!(e.to_string().contains("targets[row 1, column 2]"), "{e}");
}

#[test]
fn weighted_bce_matches_cpu() {
    let Some(gpu) = gpu_or_skip("weighted_bce_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(23);
    let cases: &[(usize, &[usize])] = &[(1, &[1, 1]), (513, &[1; 40]), (65, &[3, 1, 70])];
    for &(n, sizes) in cases {
        let layout = TaskLayout::from_sizes(sizes).unwrap();
        let (t, w) = (layout.num_tasks(), layout.width());
        let logits: Vec<f32> = (0..n * w)
            .map(|_| match rng.random_range(0..8) {
                0 => 1e4,
                1 => -1e4,
                _ => rng.random_range(-10.0f32..10.0),
            })
            .collect();
        let targets: Vec<f32> = (0..n * w)
            .map(|_| match rng.random_range(0..3) {
                0 => 0.0,
                1 => 1.0,
                _ => rng.random_range(0.0f32..1.0),
            })
            .collect();
        let mask: Vec<u8> = (0..n * t)
            .map(|k| u8::from(k % t != 0 && rng.random_bool(0.8)))
            .collect();
        let weights: Vec<f32> = (0..t).map(|_| rng.random_range(0.05f32..2.0)).collect();
        let cpu_in = WeightedBceInput {
            layout: &layout,
            n,
            logits: &logits,
            targets: &targets,
            mask: Some(&mask),
            weights: &weights,
        };
        let mut want_grad = vec![0.0f32; n * w];
        let want = cpu::weighted_bce_loss(&cpu_in, Some(&mut want_grad)).unwrap();
        let (dl, dt, dm) = (up(&gpu, &logits), up(&gpu, &targets), up(&gpu, &mask));
        let cu_in = CudaBceInput {
            layout: &layout,
            n,
            logits: &dl,
            targets: &dt,
            mask: Some(&dm),
            weights: &weights,
        };
        let mut dgrad = up(&gpu, &vec![f32::NAN; n * w]);
        let got = cuda::weighted_bce_loss(&gpu, &cu_in, Some(&mut dgrad)).unwrap();
        let what = format!("bce n={n} sizes={sizes:?}");
        check_losses(&got, &want, &what);
        let scales: Vec<f64> = (0..t)
            .map(|k| weights[k] as f64 / (want.counts[k].max(1) * layout.range(k).len()) as f64)
            .collect();
        check_grad(&down(&gpu, &dgrad), &want_grad, &layout, n, &scales, &what);
        let counts = weighted_loss::check_bce_targets(&layout, n, &targets, Some(&mask)).unwrap();
        assert_eq!(counts, want.counts, "{what}: host counts");
        let mut dgrad2 = up(&gpu, &vec![f32::NAN; n * w]);
        let dev = weighted_loss::weighted_bce_loss_device(&gpu, &cu_in, Some(&mut dgrad2)).unwrap();
        device_output_matches(&gpu, &dev, &got, &what);
        assert_eq!(
            down(&gpu, &dgrad2),
            down(&gpu, &dgrad),
            "{what}: device-path gradient"
        );
    }
}

/// The device results of the training path equal the checked call's read-back, bit for bit.
fn device_output_matches(
    gpu: &Gpu,
    dev: &weighted_loss::DeviceLossOutput,
    got: &cpu::WeightedLossOutput,
    what: &str,
) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&down(gpu, &dev.task_loss)),
        bits(&got.task_loss),
        "{what}: task losses"
    );
    assert_eq!(
        down(gpu, &dev.total)[0].to_bits(),
        got.total.to_bits(),
        "{what}: total"
    );
    let counts: Vec<usize> = down(gpu, &dev.counts).iter().map(|&c| c as usize).collect();
    assert_eq!(counts, got.counts, "{what}: device counts");
}

/// The host checks of the training path refuse bad targets with the CPU's messages, before
/// anything reaches the device.
#[test]
fn host_target_checks_match_the_cpu() {
    let layout = TaskLayout::from_sizes(&[3, 2]).unwrap();
    let logits = [0.5f32; 10];
    let ce = |targets: &[i64], mask: Option<&[u8]>| {
        let host = weighted_loss::check_ce_targets(&layout, 2, targets, mask, IGNORE);
        let input = WeightedCeInput {
            layout: &layout,
            n: 2,
            logits: &logits,
            targets,
            mask,
            weights: &[1.0, 1.0],
            ignore_index: IGNORE,
        };
        let cpu = cpu::weighted_ce_loss(&input, None);
        (host, cpu)
    };
    // Task 1 has 2 classes: 7 is out of range; masked out or ignored it is fine.
    let (host, cpu) = ce(&[0, 1, 2, 7], None);
    let (h, c) = (host.unwrap_err().to_string(), cpu.unwrap_err().to_string());
    assert!(
        h.contains("targets[row 1, task 1] = 7 is outside [0, 2)"),
        "{h}"
    );
    assert!(
        c.ends_with(h.split_once(": ").unwrap().1),
        "host `{h}` vs cpu `{c}`"
    );
    let (host, cpu) = ce(&[0, 1, 2, 7], Some(&[1, 1, 1, 0]));
    assert_eq!(host.unwrap(), cpu.unwrap().counts);
    let (host, cpu) = ce(&[-1, IGNORE, 2, 1], None);
    assert!(
        host.unwrap_err()
            .to_string()
            .contains("targets[row 0, task 0] = -1")
    );
    assert!(cpu.is_err());
    assert_eq!(ce(&[IGNORE, 1, 2, 0], None).0.unwrap(), vec![1, 2]);

    let bce_targets = [0.0f32, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, f32::NAN, 0.0, 0.0];
    let h = weighted_loss::check_bce_targets(&layout, 2, &bce_targets, None)
        .unwrap_err()
        .to_string();
    assert!(
        h.contains("targets[row 1, column 2] = NaN is outside [0, 1]"),
        "{h}"
    );
    let counts = weighted_loss::check_bce_targets(&layout, 2, &[0.5; 10], Some(&[0, 1, 1, 1]));
    assert_eq!(counts.unwrap(), vec![1, 2]);
}
