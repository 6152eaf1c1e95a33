//! The Gram kernel's reads without its arithmetic, to place the kernel between what its
//! access pattern allows and what one pass over the same bytes allows on this machine.
//!
//! Both walk the T x P matrix in the kernel's 2,048-column blocks (groups of 16 blocks spread
//! over rayon's pool) and fold every loaded vector into a running max so the loads stay.
//! `tiles` reads each block like the kernel's 4 x 4 register tiles: tile by tile, 4 or 8 rows
//! side by side, so every row piece is read once per tile it is in (4 times at T = 16).
//! `one_pass` reads each block's row pieces once, 4 rows side by side.
//! The tile pattern is the AVX-512 kernel's (the AVX2 kernel walks L1-sized chunks instead);
//! without AVX-512 the same loops run with the baseline build's narrower loads.

use rayon::prelude::*;

/// Columns per block, as in the CPU kernel.
const BLOCK: usize = 2048;
/// Blocks per unit of parallel work, as in the CPU kernel.
const BLOCKS_PER_GROUP: usize = 16;
/// Rows per tile side, as in the AVX-512 kernel.
const R: usize = 4;

/// Running maxima: 8 independent vectors of 16 lanes.
type Acc = [[f32; 16]; 8];

/// Which reads a block gets.
#[derive(Clone, Copy)]
enum Pattern {
    Tiles,
    OnePass,
}

/// Reads the T x P matrix `g` tile by tile (see the module docs); returns a value that
/// depends on every load.
pub fn tiles(g: &[f32], t: usize, p: usize) -> f32 {
    run(g, t, p, Pattern::Tiles)
}

/// Reads the T x P matrix `g` once, 4 rows side by side per block; returns a value that
/// depends on every load.
pub fn one_pass(g: &[f32], t: usize, p: usize) -> f32 {
    run(g, t, p, Pattern::OnePass)
}

/// The blocks of `g` read with `pattern`, groups of blocks on rayon's pool.
fn run(g: &[f32], t: usize, p: usize, pattern: Pattern) -> f32 {
    assert!(
        g.len() >= t * p,
        "g holds {} values, expected t * p = {}",
        g.len(),
        t * p
    );
    let group = BLOCK * BLOCKS_PER_GROUP;
    (0..p.div_ceil(group))
        .into_par_iter()
        .map(|k| {
            let mut acc = [[f32::MIN; 16]; 8];
            let end = ((k + 1) * group).min(p);
            let mut c = k * group;
            while c < end {
                let e = (c + BLOCK).min(end);
                // As the kernel: prefetch as much of the next block as lies in this group.
                let ahead = BLOCK.min(end - e);
                block(g, t, p, Cols { c, e, ahead }, pattern, &mut acc);
                c = e;
            }
            acc.iter().flatten().copied().fold(f32::MIN, max)
        })
        .reduce(|| f32::MIN, max)
}

/// `a` or `b`, whichever is larger: one `maxps` (f32::max also orders NaNs).
#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if b > a { b } else { a }
}

/// One block's reads, with AVX-512 where the CPU has it (the kernel's loads are 64 bytes).
fn block(g: &[f32], t: usize, p: usize, cols: Cols, pattern: Pattern, acc: &mut Acc) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU supports AVX-512F (checked just above).
        unsafe { block_avx512(g, t, p, cols, pattern, acc) };
        return;
    }
    block_body(g, t, p, cols, pattern, acc);
}

/// A block's columns [c, e) and how many columns after it to prefetch.
#[derive(Clone, Copy)]
struct Cols {
    c: usize,
    e: usize,
    ahead: usize,
}

/// [`block_body`] built for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(g: &[f32], t: usize, p: usize, cols: Cols, pattern: Pattern, acc: &mut Acc) {
    block_body(g, t, p, cols, pattern, acc);
}

/// The reads of one block in `pattern`'s order. As in the kernel, each unit of work (a tile,
/// or a group of rows in one pass) also prefetches its share of the next block's rows, one
/// line per row and step, with the kernel's hint (into L1 on Zen 5, else into L2).
#[inline(always)]
fn block_body(g: &[f32], t: usize, p: usize, cols: Cols, pattern: Pattern, acc: &mut Acc) {
    let Cols { c, e, ahead } = cols;
    // Whole 16-column steps only: a block's tail is under 16 of its 2,048 columns.
    let steps = (e - c) / 16;
    let row = |i: usize| &g[i * p + c..i * p + c + 16 * steps];
    let nb = t.div_ceil(R);
    let units = match pattern {
        Pattern::Tiles => nb * (nb + 1) / 2,
        Pattern::OnePass => nb,
    };
    let per_unit = t.div_ceil(units);
    let l1 = scalarize_kernels::cpu::grad_gram_prefetches_into_l1();
    let mut q = 0;
    let mut next = || {
        let rows = (q * per_unit).min(t)..((q + 1) * per_unit).min(t);
        q += 1;
        Prefetch {
            // Prefetch addresses are never dereferenced: wrapping_add keeps them defined.
            rows: std::array::from_fn(|k| g.as_ptr().wrapping_add((rows.start + k) * p + e)),
            count: if ahead == 0 { 0 } else { rows.len() },
            steps: ahead / 16,
            l1,
        }
    };
    // The first N rows from r0 (N <= the rows left, as the kernel's partial tiles).
    macro_rules! rows {
        ($r0:expr, $n:literal) => {{
            let r0: usize = $r0;
            let r: [&[f32]; $n] = std::array::from_fn(|u| row(r0 + u));
            r
        }};
    }
    // A unit reading rows r0.. alone (n of them, 1..=4): a diagonal tile or a one-pass group.
    macro_rules! alone {
        ($r0:expr, $n:expr) => {{
            let pf = next();
            match $n {
                4 => sweep(rows!($r0, 4), [], steps, &pf, acc),
                3 => sweep(rows!($r0, 3), [], steps, &pf, acc),
                2 => sweep(rows!($r0, 2), [], steps, &pf, acc),
                _ => sweep(rows!($r0, 1), [], steps, &pf, acc),
            }
        }};
    }
    match pattern {
        Pattern::Tiles => {
            for bi in (0..t).step_by(R) {
                // Diagonal tile: its own rows; then the full tile bi.. against the rows right of it.
                alone!(bi, (t - bi).min(R));
                for bj in (bi + R..t).step_by(R) {
                    let pf = next();
                    let a = rows!(bi, 4);
                    match (t - bj).min(R) {
                        4 => sweep(a, rows!(bj, 4), steps, &pf, acc),
                        3 => sweep(a, rows!(bj, 3), steps, &pf, acc),
                        2 => sweep(a, rows!(bj, 2), steps, &pf, acc),
                        _ => sweep(a, rows!(bj, 1), steps, &pf, acc),
                    }
                }
            }
        }
        Pattern::OnePass => {
            for r0 in (0..t).step_by(R) {
                alone!(r0, (t - r0).min(R));
            }
        }
    }
}

/// A unit's rows of the next block to prefetch (as in the kernel).
struct Prefetch {
    rows: [*const f32; R],
    count: usize,
    steps: usize,
    l1: bool,
}

/// Steps through `steps` 16-column vectors of the rows in `a` and `b` side by side, each row
/// folded into its own running max (a..., then b...), prefetching meanwhile.
#[inline(always)]
fn sweep<const NA: usize, const NB: usize>(
    a: [&[f32]; NA],
    b: [&[f32]; NB],
    steps: usize,
    pf: &Prefetch,
    acc: &mut Acc,
) {
    assert!(NA + NB <= acc.len() && a.iter().chain(&b).all(|r| r.len() >= 16 * steps));
    // Kept in locals (registers) through the loop, as the kernel keeps its accumulators.
    let mut m = *acc;
    for s in 0..steps {
        if s < pf.steps {
            for &r in &pf.rows[..pf.count] {
                prefetch(r.wrapping_add(16 * s), pf.l1);
            }
        }
        // SAFETY (both loads): 16 s + 16 <= 16 steps <= the row's length (asserted above).
        let load = |row: &[f32]| unsafe {
            row.as_ptr()
                .add(16 * s)
                .cast::<[f32; 16]>()
                .read_unaligned()
        };
        for u in 0..NA {
            let x = load(a[u]);
            for l in 0..16 {
                m[u][l] = max(m[u][l], x[l]);
            }
        }
        for v in 0..NB {
            let x = load(b[v]);
            for l in 0..16 {
                m[NA + v][l] = max(m[NA + v][l], x[l]);
            }
        }
    }
    *acc = m;
}

/// Prefetches the line at `ptr` with the kernel's hint (into L1 when `l1`, else L2); nothing
/// off x86-64.
#[inline(always)]
fn prefetch(ptr: *const f32, l1: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
        // SAFETY: x86-64 always has SSE; a prefetch never faults and does not access memory
        // semantically.
        unsafe {
            if l1 {
                _mm_prefetch::<{ _MM_HINT_T0 }>(ptr.cast::<i8>());
            } else {
                _mm_prefetch::<{ _MM_HINT_T1 }>(ptr.cast::<i8>());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, l1);
}
