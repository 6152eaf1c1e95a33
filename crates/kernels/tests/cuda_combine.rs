//! The device weighted combination of per-task gradient rows (kernels/combine.cu) against a
//! naive f64 reference written here that follows crates/mto/src/combine.rs (`combine_range`):
//! zero weights skipped, f64 accumulation in ascending t from 0, one rounding to f32. The kernel
//! does the same correctly rounded operations in the same order, so the comparison is exact
//! (bit for bit), not within a tolerance. Outputs are poisoned with NaN before every run.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cuda::combine::{
    MAX_T, combine, combine_device, combine_into, combine_segments, combine_segments_into,
};
use scalarize_kernels::cuda::{DeviceElem, Gpu, GpuBuffer};

fn up<T: DeviceElem>(gpu: &Gpu, v: &[T]) -> GpuBuffer<T> {
    gpu.upload(v).unwrap()
}

/// Naive reference: out[c] = sum over t ascending with w != 0 of w * g[t, c], in f64.
fn reference(g: &[f32], t: usize, p: usize, ends: &[usize], w: &[Vec<f64>]) -> Vec<f32> {
    let mut out = vec![0f32; p];
    let mut start = 0;
    for (l, &end) in ends.iter().enumerate() {
        for (c, o) in out.iter_mut().enumerate().take(end).skip(start) {
            let mut acc = 0f64;
            for (r, &wt) in w[l].iter().enumerate().take(t) {
                if wt == 0.0 {
                    continue;
                }
                acc += wt * g[r * p + c] as f64;
            }
            *o = acc as f32;
        }
        start = end;
    }
    out
}

fn random_ends(rng: &mut StdRng, p: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = (0..rng.random_range(0..12))
        .map(|_| rng.random_range(1..=p))
        .collect();
    ends.push(p);
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// Random weights with about one in five exactly zero (those rows are skipped).
fn random_weights(rng: &mut StdRng, t: usize) -> Vec<f64> {
    (0..t)
        .map(|_| {
            if rng.random_bool(0.2) {
                0.0
            } else {
                rng.random_range(-3.0f64..3.0)
            }
        })
        .collect()
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (c, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{what}: column {c}: cuda {a} reference {b}"
        );
    }
}

#[test]
fn combine_matches_reference() {
    let Some(gpu) = Gpu::for_tests("combine_matches_reference") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(91);
    let cases: &[(usize, usize)] = &[
        (1, 1),
        (1, 2049),
        (2, 7),
        (2, 4099),
        (8, 2047),
        (17, 333),
        (17, 6151),
        (64, 1),
        (64, 2051),
    ];
    for &(t, p) in cases {
        let mut g: Vec<f32> = (0..t * p).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut w = random_weights(&mut rng, t);
        if t > 1 {
            // A zero-weight row full of NaN must not leak into the result (the CPU skips it).
            w[t - 1] = 0.0;
            g[(t - 1) * p..].fill(f32::NAN);
        }
        let dg = up(&gpu, &g);
        let want = reference(&g, t, p, &[p], std::slice::from_ref(&w));
        let mut out = up(&gpu, &vec![f32::NAN; p]);
        combine(&gpu, &dg, t, p, &w, &mut out).unwrap();
        let got = gpu.download(&out).unwrap();
        assert_bits(&got, &want, &format!("combine t={t} p={p}"));
        assert!(got.iter().all(|x| x.is_finite()), "t={t} p={p}: NaN leaked");

        // Per-segment weights, host and device, over random segment boundaries.
        let ends = random_ends(&mut rng, p);
        let ws: Vec<Vec<f64>> = ends.iter().map(|_| random_weights(&mut rng, t)).collect();
        let want = reference(&g, t, p, &ends, &ws);
        let mut out = up(&gpu, &vec![f32::NAN; p]);
        combine_segments(&gpu, &dg, t, p, &ends, &ws, &mut out).unwrap();
        let got = gpu.download(&out).unwrap();
        let what = format!("combine_segments t={t} p={p} ends={ends:?}");
        assert_bits(&got, &want, &what);
        let dw = up(&gpu, &ws.concat());
        let mut out2 = up(&gpu, &vec![f32::NAN; p]);
        combine_device(&gpu, &dg, t, p, &ends, &dw, &mut out2).unwrap();
        assert_bits(&gpu.download(&out2).unwrap(), &want, &what);

        // Reproducible bit for bit.
        let mut again = up(&gpu, &vec![f32::NAN; p]);
        combine_segments(&gpu, &dg, t, p, &ends, &ws, &mut again).unwrap();
        assert_bits(&gpu.download(&again).unwrap(), &got, "second run");
    }
}

#[test]
fn combine_with_unit_weight_copies_the_row() {
    // A one-hot weight picks one task's gradient exactly: an independent check of the indexing
    // (each column must read its own row and column).
    let Some(gpu) = Gpu::for_tests("combine_with_unit_weight_copies_the_row") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(92);
    let (t, p) = (5, 3001);
    let g: Vec<f32> = (0..t * p).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let dg = up(&gpu, &g);
    for r in 0..t {
        let mut w = vec![0.0; t];
        w[r] = 1.0;
        let mut out = up(&gpu, &vec![f32::NAN; p]);
        combine(&gpu, &dg, t, p, &w, &mut out).unwrap();
        assert_bits(
            &gpu.download(&out).unwrap(),
            &g[r * p..(r + 1) * p],
            &format!("row {r}"),
        );
    }
    // All weights zero: the direction is exactly zero.
    let mut out = up(&gpu, &vec![f32::NAN; p]);
    combine(&gpu, &dg, t, p, &vec![0.0; t], &mut out).unwrap();
    assert!(gpu.download(&out).unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn combine_rejects_bad_input() {
    let Some(gpu) = Gpu::for_tests("combine_rejects_bad_input") else {
        return;
    };
    let t = MAX_T + 1;
    let dg = up(&gpu, &vec![1.0f32; t * 3]);
    let mut out = up(&gpu, &[0.0f32; 3]);
    let e = combine(&gpu, &dg, t, 3, &vec![1.0; t], &mut out).unwrap_err();
    assert!(e.to_string().contains("at most 64"), "{e}");

    let dg = up(&gpu, &[1.0f32; 6]);
    let e = combine(&gpu, &dg, 2, 4, &[1.0, 1.0], &mut out).unwrap_err();
    assert!(e.to_string().contains("`g`"), "{e}");
    let e = combine(&gpu, &dg, 2, 3, &[1.0], &mut out).unwrap_err();
    assert!(e.to_string().contains("`weights`"), "{e}");
    let mut short = up(&gpu, &[0.0f32; 2]);
    let e = combine(&gpu, &dg, 2, 3, &[1.0, 1.0], &mut short).unwrap_err();
    assert!(e.to_string().contains("`out`"), "{e}");
    let e = combine(&gpu, &dg, 0, 3, &[], &mut out).unwrap_err();
    assert!(e.to_string().contains("empty input"), "{e}");

    let w2 = vec![vec![1.0, 2.0], vec![1.0, 2.0]];
    let e = combine_segments(&gpu, &dg, 2, 3, &[2, 2], &w2, &mut out).unwrap_err();
    assert!(e.to_string().contains("segment_ends[1]"), "{e}");
    let e = combine_segments(&gpu, &dg, 2, 3, &[1, 2], &w2, &mut out).unwrap_err();
    assert!(e.to_string().contains("expected p = 3"), "{e}");
    let e = combine_segments(&gpu, &dg, 2, 3, &[3], &w2, &mut out).unwrap_err();
    assert!(e.to_string().contains("`weights`"), "{e}");
    let bad = vec![vec![1.0, 2.0], vec![1.0]];
    let e = combine_segments(&gpu, &dg, 2, 3, &[1, 3], &bad, &mut out).unwrap_err();
    assert!(e.to_string().contains("weights[1]"), "{e}");
    let dw = up(&gpu, &[1.0f64; 3]);
    let e = combine_device(&gpu, &dg, 2, 3, &[1, 3], &dw, &mut out).unwrap_err();
    assert!(e.to_string().contains("`weights`"), "{e}");
}

#[test]
fn combine_into_writes_only_its_range() {
    // The trainer fills one flat [backbone | heads] buffer with two combinations: each must
    // write exactly its P columns from `out_at` and leave the rest of the buffer untouched.
    let Some(gpu) = Gpu::for_tests("combine_into_writes_only_its_range") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(93);
    for &(t, p, at, tail) in &[
        (1usize, 1usize, 0usize, 3usize),
        (3, 2051, 5, 0),
        (4, 777, 2049, 17),
    ] {
        let g: Vec<f32> = (0..t * p).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let dg = up(&gpu, &g);
        let len = at + p + tail;
        let sentinel: Vec<f32> = (0..len).map(|i| -1000.0 - i as f32).collect();

        let w = random_weights(&mut rng, t);
        let mut out = up(&gpu, &sentinel);
        combine_into(&gpu, &dg, t, p, &w, &mut out, at).unwrap();
        let got = gpu.download(&out).unwrap();
        let what = format!("combine_into t={t} p={p} at={at}");
        assert_bits(&got[..at], &sentinel[..at], &what);
        assert_bits(&got[at + p..], &sentinel[at + p..], &what);
        assert_bits(
            &got[at..at + p],
            &reference(&g, t, p, &[p], std::slice::from_ref(&w)),
            &what,
        );

        let ends = random_ends(&mut rng, p);
        let ws: Vec<Vec<f64>> = ends.iter().map(|_| random_weights(&mut rng, t)).collect();
        let mut out = up(&gpu, &sentinel);
        combine_segments_into(&gpu, &dg, t, p, &ends, &ws, &mut out, at).unwrap();
        let got = gpu.download(&out).unwrap();
        let what = format!("combine_segments_into t={t} p={p} at={at} ends={ends:?}");
        assert_bits(&got[..at], &sentinel[..at], &what);
        assert_bits(&got[at + p..], &sentinel[at + p..], &what);
        assert_bits(&got[at..at + p], &reference(&g, t, p, &ends, &ws), &what);
    }
    // No room for P columns from out_at: a clear error, nothing written.
    let dg = up(&gpu, &[1.0f32; 6]);
    let mut out = up(&gpu, &[0.0f32; 4]);
    let e = combine_into(&gpu, &dg, 2, 3, &[1.0, 1.0], &mut out, 2).unwrap_err();
    assert!(e.to_string().contains("out_at 2 + p 3"), "{e}");
    let e = combine_segments_into(
        &gpu,
        &dg,
        2,
        3,
        &[3],
        &[vec![1.0, 1.0]],
        &mut out,
        usize::MAX,
    )
    .unwrap_err();
    assert!(e.to_string().contains("at least"), "{e}");
    assert_eq!(gpu.download(&out).unwrap(), vec![0.0; 4]);
    let e = combine_segments_into(&gpu, &dg, 2, 3, &[3], &[vec![1.0]], &mut out, 0).unwrap_err();
    assert!(e.to_string().contains("weights[0]"), "{e}");
}
