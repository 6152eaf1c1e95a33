//! CPU `grad_gram` against a naive f64 reference, invariants, determinism and bad input.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu::{GRAM_PAR_MIN_VALUES, GramPart, grad_gram, grad_gram_fast};

mod common;
use common::assert_gram_close;

/// Random T x P matrix with values of mixed scale (never all zero).
fn random_g(rng: &mut StdRng, t: usize, p: usize) -> Vec<f32> {
    (0..t * p)
        .map(|_| rng.random_range(-1.0f32..1.0) * if rng.random_bool(0.1) { 30.0 } else { 1.0 })
        .collect()
}

/// Random strictly increasing segment ends ending at p, with some size-1 segments.
fn random_ends(rng: &mut StdRng, p: usize, max_l: usize) -> Vec<usize> {
    let mut ends: Vec<usize> = (0..rng.random_range(0..max_l))
        .map(|_| rng.random_range(1..=p))
        .collect();
    ends.push(p);
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// Naive reference: every pair, every segment, sequential f64 sums.
fn naive(g: &[f32], t: usize, p: usize, ends: &[usize]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    let mut start = 0;
    for &e in ends {
        let mut m = vec![0.0f64; t * t];
        for i in 0..t {
            for j in 0..t {
                m[i * t + j] = (start..e)
                    .map(|k| g[i * p + k] as f64 * g[j * p + k] as f64)
                    .sum();
            }
        }
        out.push(m);
        start = e;
    }
    out
}

/// Tolerance of `grad_gram` relative to sqrt(G_ii G_jj), i.e. on cosines: exact products and
/// f64 sums.
const TOL: f64 = 1e-12;

/// Tolerance of `grad_gram_fast`, which sums products in f32 lanes (at most 128 per lane,
/// block sums added in f64): the worst error measured on these tests is about 1e-7.
const FAST_TOL: f64 = 1e-6;

#[test]
fn matches_naive_reference_on_odd_shapes() {
    let mut rng = StdRng::seed_from_u64(7);
    let shapes = [
        (2, 1),
        (3, 7),
        (2, 2049),
        (5, 4095),
        (16, 333),
        (7, 40_001),
        (9, 70_003),
        (1, 19),
    ];
    for &(t, p) in &shapes {
        for _ in 0..3 {
            let g = random_g(&mut rng, t, p);
            let ends = random_ends(&mut rng, p, 12);
            let got = grad_gram(&g, t, p, &ends).unwrap();
            let want = naive(&g, t, p, &ends);
            assert_eq!(got.num_segments(), ends.len());
            assert_eq!(got.t, t);
            let mut want_total = vec![0.0f64; t * t];
            for (l, w) in want.iter().enumerate() {
                assert_gram_close(&got.segments[l], w, t, TOL, &format!("t={t} p={p} seg {l}"));
                for (a, b) in want_total.iter_mut().zip(w) {
                    *a += b;
                }
            }
            assert_gram_close(
                &got.total,
                &want_total,
                t,
                TOL,
                &format!("t={t} p={p} total"),
            );
        }
    }
}

#[test]
fn every_t_from_2_to_16_with_many_small_segments() {
    let mut rng = StdRng::seed_from_u64(11);
    for t in 2..=16 {
        let p = 3001 + 17 * t;
        let g = random_g(&mut rng, t, p);
        // Segments of 64 floats next to big ones, like a bias next to a conv.
        let mut ends = vec![64, 128, 2100, 2164];
        ends.push(p);
        let got = grad_gram(&g, t, p, &ends).unwrap();
        let want = naive(&g, t, p, &ends);
        for (l, w) in want.iter().enumerate() {
            assert_gram_close(&got.segments[l], w, t, TOL, &format!("t={t} seg {l}"));
        }
    }
}

#[test]
fn symmetric_and_cosines_consistent() {
    let mut rng = StdRng::seed_from_u64(3);
    let (t, p) = (6, 5000);
    let g = random_g(&mut rng, t, p);
    let ends = [1000, 1001, 5000];
    let r = grad_gram(&g, t, p, &ends).unwrap();
    for l in 0..3 {
        for i in 0..t {
            assert!(r.dot(l, i, i) > 0.0);
            for j in 0..t {
                assert_eq!(r.dot(l, i, j), r.dot(l, j, i));
                let c = r.cosine(l, i, j);
                let want = r.dot(l, i, j) / (r.norm(l, i) * r.norm(l, j));
                assert!((c - want.clamp(-1.0, 1.0)).abs() < 1e-12);
            }
            assert!((r.cosine(l, i, i) - 1.0).abs() < 1e-12);
        }
    }
    let cm = r.cosine_matrix(GramPart::Total);
    assert_eq!(cm.len(), t * t);
    assert!((cm[t + 2] - r.total_cosine(1, 2)).abs() < 1e-15);
    // Known answer: a row and its negation have cosine -1, a scaled copy +1.
    let p = 10;
    let base: Vec<f32> = (0..p).map(|k| k as f32 - 4.5).collect();
    let mut g = base.clone();
    g.extend(base.iter().map(|x| -x));
    g.extend(base.iter().map(|x| 3.0 * x));
    let r = grad_gram(&g, 3, p, &[p]).unwrap();
    assert!((r.total_cosine(0, 1) + 1.0).abs() < 1e-12);
    assert!((r.total_cosine(0, 2) - 1.0).abs() < 1e-12);
    let sq: f64 = base.iter().map(|&x| (x as f64) * (x as f64)).sum();
    assert!((r.total_norm(2) - 3.0 * sq.sqrt()).abs() < 1e-9);
}

#[test]
fn zero_segment_gives_zero_cosine() {
    let (t, p) = (2, 6);
    let g = vec![0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0];
    let r = grad_gram(&g, t, p, &[3, 6]).unwrap();
    assert_eq!(r.cosine(0, 0, 1), 0.0);
    assert_eq!(r.norm(0, 0), 0.0);
    assert_eq!(r.dot(1, 0, 1), 4.0 + 10.0 + 18.0);
}

#[test]
fn deterministic_regardless_of_thread_count() {
    let mut rng = StdRng::seed_from_u64(5);
    // Several parallel groups (group = 32,768 columns) and a segment spanning groups, large
    // enough for the pool (smaller calls run on the calling thread).
    let (t, p) = (4, 600_003);
    assert!(t * p >= GRAM_PAR_MIN_VALUES);
    let g = random_g(&mut rng, t, p);
    let ends = [10, 40_000, 150_000, p];
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| grad_gram(&g, t, p, &ends).unwrap())
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        let other = run(threads);
        for (a, b) in one
            .segments
            .iter()
            .flatten()
            .zip(other.segments.iter().flatten())
        {
            assert_eq!(a.to_bits(), b.to_bits(), "{threads} threads differ");
        }
        assert_eq!(one.total, other.total);
    }
}

#[test]
fn bad_input_is_an_error_naming_the_problem() {
    let g = vec![1.0f32; 12];
    let e = grad_gram(&g, 3, 4, &[]).unwrap_err();
    assert!(e.to_string().contains("segment_ends is empty"), "{e}");
    let e = grad_gram(&g, 3, 4, &[2, 2, 4]).unwrap_err();
    assert!(e.to_string().contains("segment_ends[1] = 2"), "{e}");
    let e = grad_gram(&g, 3, 4, &[0, 4]).unwrap_err();
    assert!(e.to_string().contains("segment_ends[0] = 0"), "{e}");
    let e = grad_gram(&g, 3, 4, &[3]).unwrap_err();
    assert!(e.to_string().contains("expected p = 4"), "{e}");
    let e = grad_gram(&g, 4, 4, &[4]).unwrap_err();
    assert!(
        e.to_string().contains("`g` has 12 elements, expected 16"),
        "{e}"
    );
    let e = grad_gram(&[], 0, 4, &[4]).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
}

#[test]
fn fast_cosines_within_1e_6_and_exact_within_1e_12_for_t_up_to_64() {
    let mut rng = StdRng::seed_from_u64(13);
    let mut worst = 0.0f64;
    for &t in &[2usize, 3, 5, 8, 12, 16, 31, 64] {
        let p = 9000 + 13 * t;
        let g = random_g(&mut rng, t, p);
        // A 1-float and a 64-float segment next to ones spanning several 2048-column blocks.
        let ends = [1, 65, 6000, 6001, p];
        let got = grad_gram_fast(&g, t, p, &ends).unwrap();
        let exact = grad_gram(&g, t, p, &ends).unwrap();
        let want = naive(&g, t, p, &ends);
        for (l, w) in want.iter().enumerate() {
            assert_gram_close(&exact.segments[l], w, t, TOL, &format!("t={t} seg {l}"));
            for i in 0..t {
                for j in 0..t {
                    let d = (w[i * t + i] * w[j * t + j]).sqrt();
                    let want_cos = if d > 0.0 { w[i * t + j] / d } else { 0.0 };
                    let err = (got.cosine(l, i, j) - want_cos).abs();
                    worst = worst.max(err);
                    assert!(err <= 1e-6, "t={t} seg {l} ({i},{j}): cosine error {err}");
                }
            }
        }
    }
    eprintln!("grad_gram_fast: worst cosine error {worst:.2e}");
    // The fast variant really sums in f32 (guards against a silent switch to f64).
    assert!(worst > 1e-12, "{worst}");
}

#[test]
fn fast_variant_is_exact_on_rows_outside_the_f32_range() {
    let mut rng = StdRng::seed_from_u64(17);
    let (t, p) = (5, 5000);
    let base = random_g(&mut rng, t, p);
    // Row 1 tiny (squares underflow f32), row 3 huge (squares overflow f32) in the middle
    // segment only, row 4 exactly zero there: exact f64 sums are expected where f32 would fail.
    let ends = [1000, 3000, p];
    let mut g = base.clone();
    for k in 1000..3000 {
        g[p + k] *= 1e-25;
        g[3 * p + k] *= 1e25;
        g[4 * p + k] = 0.0;
    }
    let got = grad_gram_fast(&g, t, p, &ends).unwrap();
    let want = naive(&g, t, p, &ends);
    assert_gram_close(&got.segments[1], &want[1], t, TOL, "out-of-range segment");
    assert_eq!(got.dot(1, 4, 4), 0.0);
    assert_eq!(got.cosine(1, 0, 4), 0.0);
    for l in [0, 2] {
        assert_gram_close(&got.segments[l], &want[l], t, FAST_TOL, &format!("seg {l}"));
    }
}

#[test]
fn fast_variant_matches_naive_and_is_deterministic() {
    let mut rng = StdRng::seed_from_u64(19);
    let (t, p) = (6, 400_003);
    assert!(t * p >= GRAM_PAR_MIN_VALUES, "large enough for the pool");
    let g = random_g(&mut rng, t, p);
    let ends = [1, 64, 40_000, 150_000, p];
    let want = naive(&g, t, p, &ends);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| grad_gram_fast(&g, t, p, &ends).unwrap())
    };
    let one = run(1);
    for (l, w) in want.iter().enumerate() {
        assert_gram_close(&one.segments[l], w, t, FAST_TOL, &format!("seg {l}"));
    }
    for threads in [2, 3] {
        assert_eq!(one, run(threads), "{threads} threads differ");
    }
}

/// The largest P: T = 2 x P = 10^9 (8 GB), segments of 64 floats next to ones of
/// hundreds of millions, against f64 dot products (in fixed-size chunks, summed in order).
/// Row 1 is 0.6 row 0 + 0.8 independent noise, so the whole-vector cosine is 0.6 up to
/// sampling error (about 1e-4 here). Skipped with a printed reason on machines with less than
/// 10 GiB available.
#[test]
fn one_billion_columns() {
    use rayon::prelude::*;
    const P: usize = 1_000_000_000;
    let need = 10u64 << 30;
    match common::mem_available_bytes() {
        Some(have) if have >= need => {}
        have => {
            eprintln!(
                "SKIPPED one_billion_columns: needs {need} bytes available, /proc/meminfo says \
                 {have:?}"
            );
            return;
        }
    }
    const CHUNK: usize = 1 << 20;
    let add3 = |a: [f64; 3], b: &[f64; 3]| [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
    let g = common::hashed_rows(2, P);
    let (r0, r1) = g.split_at(P);
    // Sums (x0 x0, x0 x1, x1 x1) over columns `cols`, chunk sums added in chunk order (the
    // whole vector's are the segments' added in order).
    let dots = |cols: std::ops::Range<usize>| -> [f64; 3] {
        let end = cols.end;
        let parts: Vec<[f64; 3]> = cols
            .step_by(CHUNK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|a| {
                let b = (a + CHUNK).min(end);
                let mut s = [0.0f64; 3];
                for (&x, &y) in r0[a..b].iter().zip(&r1[a..b]) {
                    let (x, y) = (x as f64, y as f64);
                    s[0] += x * x;
                    s[1] += x * y;
                    s[2] += y * y;
                }
                s
            })
            .collect();
        parts.iter().fold([0.0; 3], add3)
    };
    // A bias-sized segment, one of 64 floats, then one of 2M, one of nearly the whole vector
    // and a last one of 7 floats.
    let ends = [64, 128, 2_000_128, P - 7, P];
    let mut starts = vec![0];
    starts.extend_from_slice(&ends[..ends.len() - 1]);
    let bounds: Vec<std::ops::Range<usize>> =
        starts.iter().zip(&ends).map(|(&a, &b)| a..b).collect();
    let want: Vec<[f64; 3]> = bounds.iter().map(|r| dots(r.clone())).collect();
    let total = want.iter().fold([0.0; 3], add3);
    let cos = total[1] / (total[0] * total[2]).sqrt();
    assert!(
        (cos - 0.6).abs() < 1e-3,
        "reference cosine {cos}, expected about 0.6"
    );
    for (exact, tol) in [(true, TOL), (false, FAST_TOL)] {
        let got = if exact {
            grad_gram(&g, 2, P, &ends)
        } else {
            grad_gram_fast(&g, 2, P, &ends)
        }
        .expect("valid input");
        assert_eq!(got.num_segments(), ends.len());
        for (l, w) in want.iter().enumerate() {
            let m = [w[0], w[1], w[1], w[2]];
            let what = format!("exact {exact} segment {l} ({:?})", bounds[l]);
            assert_gram_close(&got.segments[l], &m, 2, tol, &what);
        }
        let m = [total[0], total[1], total[1], total[2]];
        assert_gram_close(&got.total, &m, 2, tol, &format!("exact {exact} total"));
        assert!(
            (got.total_cosine(0, 1) - cos).abs() <= tol,
            "exact {exact} cosine"
        );
    }
}
