//! Shape ops on a CUDA device (the emulator without a GPU) against the same ops on the CPU:
//! concat / narrow / split / select_rows, permute / transpose and the per-axis reductions,
//! values and the gradient of every input under a random cotangent.

mod common;

use std::sync::Arc;

use common::{Rng, close, same_on_gpu};
use scalarize_autograd::{Device, Tensor};
use scalarize_kernels::cuda::Gpu;

fn gpu(test: &str) -> Option<Arc<Gpu>> {
    Gpu::for_tests(test)
}

/// `c` on the device of `like` (a constant the closure needs on either run).
fn on_device_of(g: &Arc<Gpu>, like: &Tensor, c: &Tensor) -> Tensor {
    match like.device() {
        Device::Cpu => c.clone(),
        Device::Cuda(_) => c.to_gpu(g).unwrap(),
    }
}

#[test]
fn concat_matches_cpu_on_every_axis() {
    let Some(g) = gpu("concat_axes") else {
        return;
    };
    let mut rng = Rng::new(71);
    for (shape, sizes) in [
        (vec![5], vec![1, 3, 2]),
        (vec![1, 4], vec![2, 1]),
        (vec![3, 5], vec![1, 2]),
        (vec![2, 3, 7], vec![3, 1, 2]),
        (vec![1, 2, 3, 5], vec![2, 2]),
    ] {
        for axis in 0..shape.len() {
            let parts: Vec<Tensor> = sizes
                .iter()
                .map(|&s| {
                    let mut sh = shape.clone();
                    sh[axis] = s;
                    rng.tensor(&sh)
                })
                .collect();
            let name = format!("concat {shape:?} axis {axis}");
            same_on_gpu(&g, &name, &parts, &mut rng, |t| {
                let refs: Vec<&Tensor> = t.iter().collect();
                Tensor::concat(&refs, axis)
            });
        }
    }
}

#[test]
fn concat_with_a_constant_part_gives_gradients_to_the_others_only() {
    let Some(g) = gpu("concat_const") else {
        return;
    };
    let mut rng = Rng::new(72);
    for axis in 0..3 {
        let mut cs = vec![2, 3, 4];
        cs[axis] = 1;
        let c = rng.tensor(&cs);
        let a = rng.tensor(&[2, 3, 4]);
        let b = rng.tensor(&cs);
        let name = format!("concat_const axis {axis}");
        // The constant sits between the tracked parts, so its gradient would be a middle slice.
        same_on_gpu(&g, &name, &[a, b], &mut rng, |t| {
            let c = on_device_of(&g, &t[0], &c);
            Tensor::concat(&[&t[0], &c, &t[1]], axis)
        });
    }
}

#[test]
fn narrow_and_split_match_cpu() {
    let Some(g) = gpu("narrow_split") else {
        return;
    };
    let mut rng = Rng::new(73);
    for shape in [
        vec![7],
        vec![1, 5],
        vec![3, 4],
        vec![2, 5, 3],
        vec![2, 1, 6, 3],
    ] {
        let x = rng.tensor(&shape);
        for axis in 0..shape.len() {
            let full = shape[axis];
            for (start, len) in [
                (0, full),
                (0, 1),
                (full - 1, 1),
                (full / 3, full - full / 3),
            ] {
                let name = format!("narrow {shape:?} axis {axis} {start}+{len}");
                same_on_gpu(&g, &name, std::slice::from_ref(&x), &mut rng, |t| {
                    t[0].narrow(axis, start, len)
                });
            }
            if full >= 3 {
                let sizes = [1, full - 2, 1];
                let name = format!("split {shape:?} axis {axis}");
                // Weight the pieces differently so a piece routed to the wrong place shows.
                same_on_gpu(&g, &name, std::slice::from_ref(&x), &mut rng, |t| {
                    let p = t[0].split(axis, &sizes)?;
                    Tensor::concat(&[&p[2].scale(3.0)?, &p[0], &p[1].scale(-0.5)?], axis)
                });
            }
        }
    }
}

#[test]
fn select_rows_matches_cpu_with_runs_gaps_and_repeats() {
    let Some(g) = gpu("select_rows") else {
        return;
    };
    let mut rng = Rng::new(74);
    let x = rng.tensor(&[6, 2, 3]);
    for idx in [
        vec![0],
        vec![5, 4, 3],
        vec![1, 2, 3, 0],
        vec![0, 2, 4],
        vec![3, 3, 1, 3, 2, 1],
        vec![0, 1, 0, 1, 0, 1],
    ] {
        let name = format!("select_rows {idx:?}");
        same_on_gpu(&g, &name, std::slice::from_ref(&x), &mut rng, |t| {
            t[0].select_rows(&idx)
        });
    }
    let v = rng.tensor(&[5]);
    same_on_gpu(&g, "select_rows rank 1", &[v], &mut rng, |t| {
        t[0].select_rows(&[4, 0, 4])
    });
}

#[test]
fn permute_and_transpose_match_cpu() {
    let Some(g) = gpu("permute") else {
        return;
    };
    let mut rng = Rng::new(75);
    let cases: [(Vec<usize>, Vec<usize>); 9] = [
        (vec![5], vec![0]),
        (vec![3, 5], vec![1, 0]),
        (vec![1, 7], vec![1, 0]),
        (vec![2, 3, 5], vec![0, 2, 1]),
        (vec![2, 3, 5], vec![2, 0, 1]),
        (vec![2, 3, 5], vec![1, 0, 2]),
        (vec![2, 3, 4, 5], vec![0, 2, 1, 3]),
        (vec![2, 1, 3, 5], vec![3, 1, 0, 2]),
        (vec![2, 3, 1, 2, 3], vec![4, 2, 0, 3, 1]),
    ];
    for (shape, perm) in cases {
        let x = rng.tensor(&shape);
        let name = format!("permute {shape:?} {perm:?}");
        same_on_gpu(&g, &name, &[x], &mut rng, |t| t[0].permute(&perm));
    }
    for (shape, a, b) in [
        (vec![4, 6], 0, 1),
        (vec![2, 3, 5], 1, 2),
        (vec![2, 3, 5], 2, 0),
        (vec![3, 4], 1, 1),
    ] {
        let x = rng.tensor(&shape);
        let name = format!("transpose {shape:?} {a} {b}");
        same_on_gpu(&g, &name, &[x], &mut rng, |t| t[0].transpose(a, b));
    }
}

#[test]
fn axis_reductions_match_cpu() {
    let Some(g) = gpu("axis_reductions") else {
        return;
    };
    let mut rng = Rng::new(76);
    for shape in [
        vec![7],
        vec![1, 5],
        vec![4, 1],
        vec![3, 5],
        vec![2, 3, 7],
        vec![2, 3, 1, 4],
    ] {
        let x = rng.tensor(&shape);
        for axis in 0..shape.len() {
            let name = format!("sum_axis {shape:?} {axis}");
            same_on_gpu(&g, &name, std::slice::from_ref(&x), &mut rng, |t| {
                t[0].sum_axis(axis)
            });
            let name = format!("mean_axis {shape:?} {axis}");
            same_on_gpu(&g, &name, std::slice::from_ref(&x), &mut rng, |t| {
                t[0].mean_axis(axis)
            });
        }
    }
}

#[test]
fn concat_permute_sum_axis_mean_chain_matches_cpu() {
    let Some(g) = gpu("shape_chain") else {
        return;
    };
    let mut rng = Rng::new(77);
    let a = rng.tensor(&[2, 3, 4]);
    let b = rng.tensor(&[2, 1, 4]);
    let c = rng.tensor(&[2, 2, 4]);
    same_on_gpu(
        &g,
        "concat-permute-sum_axis-mean",
        &[a, b, c],
        &mut rng,
        |t| {
            Tensor::concat(&[&t[0], &t[1], &t[2]], 1)?
                .permute(&[2, 0, 1])?
                .sum_axis(1)?
                .mean()
        },
    );
    // A rank-2 result through every op of the family, one reused input (gradients accumulate
    // on the device).
    let x = rng.tensor(&[3, 4, 5]);
    same_on_gpu(
        &g,
        "narrow-select-transpose-mean_axis",
        &[x],
        &mut rng,
        |t| {
            let head = t[0].narrow(1, 1, 2)?.select_rows(&[2, 0, 2])?;
            let tail = t[0].mean_axis(1)?.reshape(&[3, 1, 5])?;
            Tensor::concat(&[&head, &tail], 1)?
                .transpose(0, 2)?
                .sum_axis(2)
        },
    );
}

#[test]
fn device_ops_keep_errors_and_refuse_mixed_devices() {
    let Some(g) = gpu("shape_errors") else {
        return;
    };
    let mut rng = Rng::new(78);
    let x = rng.tensor(&[2, 3]).to_gpu(&g).unwrap();
    let h = rng.tensor(&[2, 3]);
    assert!(Tensor::concat(&[&x, &h], 0).is_err(), "mixed concat");
    let err = x.narrow(1, 2, 2).unwrap_err().to_string();
    assert!(err.contains("range 2..4"), "{err}");
    assert!(x.permute(&[0, 0]).is_err());
    assert!(x.sum_axis(2).is_err());
    assert!(x.select_rows(&[2]).is_err());
    // Untracked device inputs give untracked device outputs with the CPU's values.
    let y = x.sum_axis(0).unwrap();
    assert!(!y.is_tracked());
    assert_eq!(y.device(), x.device());
    let want = x.to_cpu().unwrap().sum_axis(0).unwrap();
    assert_eq!(y.shape(), want.shape());
    close(
        &y.to_host().unwrap(),
        &want.to_vec(),
        1e-6,
        "untracked sum_axis",
    );
}
