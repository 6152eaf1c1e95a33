//! CUDA concat and split against their CPU twins on fresh random inputs, outputs poisoned with
//! NaN before each run. Both are copies, so the results must match bit for bit. Without a GPU
//! the kernels run on the CUDA emulator.

mod common;

use common::{bits, gpu_or_skip, poisoned, random, same_error};

use rand::SeedableRng;
use rand::rngs::StdRng;
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::GpuBuffer;
use scalarize_kernels::cuda::concat as cc;

/// (outer, inner sizes): one row (plain copies), one part (contiguous), narrow and wide parts,
/// rows longer than a block.
const CASES: &[(usize, &[usize])] = &[
    (1, &[1]),
    (1, &[3, 5, 2]),
    (4, &[7]),
    (3, &[1, 1]),
    (5, &[2, 33, 1]),
    (2, &[300, 4]),
    (9, &[16, 16, 16]),
    (70, &[3, 40]),
];

#[test]
fn concat_and_split_match_cpu_bit_for_bit() {
    let Some(gpu) = gpu_or_skip("concat_and_split_match_cpu_bit_for_bit") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(41);
    for &(outer, inners) in CASES {
        let width: usize = inners.iter().sum();
        let parts: Vec<Vec<f32>> = inners
            .iter()
            .map(|&i| random(&mut rng, outer * i))
            .collect();
        let refs: Vec<&[f32]> = parts.iter().map(|p| &p[..]).collect();
        let mut want = vec![0.0; outer * width];
        cpu::concat(outer, &refs, inners, &mut want).unwrap();
        let dparts: Vec<GpuBuffer<f32>> = parts.iter().map(|p| gpu.upload(p).unwrap()).collect();
        let drefs: Vec<&GpuBuffer<f32>> = dparts.iter().collect();
        let mut dy = poisoned(&gpu, outer * width);
        cc::concat(&gpu, outer, &drefs, inners, &mut dy).unwrap();
        let got = gpu.download(&dy).unwrap();
        assert_eq!(
            bits(&got),
            bits(&want),
            "concat outer={outer} inners={inners:?}"
        );

        // split of a fresh x against the CPU's.
        let x = random(&mut rng, outer * width);
        let mut want: Vec<Vec<f32>> = inners.iter().map(|&i| vec![0.0; outer * i]).collect();
        let mut wrefs: Vec<&mut [f32]> = want.iter_mut().map(|p| &mut p[..]).collect();
        cpu::split(outer, &x, inners, &mut wrefs).unwrap();
        let dx = gpu.upload(&x).unwrap();
        let mut douts: Vec<GpuBuffer<f32>> =
            inners.iter().map(|&i| poisoned(&gpu, outer * i)).collect();
        let mut orefs: Vec<&mut GpuBuffer<f32>> = douts.iter_mut().collect();
        cc::split(&gpu, outer, &dx, inners, &mut orefs).unwrap();
        for (k, (d, w)) in douts.iter().zip(&want).enumerate() {
            assert_eq!(
                bits(&gpu.download(d).unwrap()),
                bits(w),
                "split outer={outer} inners={inners:?} part {k}"
            );
        }
    }
}

#[test]
fn split_undoes_concat() {
    let Some(gpu) = gpu_or_skip("split_undoes_concat") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(42);
    let (outer, inners) = (6, [5usize, 1, 37]);
    let parts: Vec<Vec<f32>> = inners
        .iter()
        .map(|&i| random(&mut rng, outer * i))
        .collect();
    let dparts: Vec<GpuBuffer<f32>> = parts.iter().map(|p| gpu.upload(p).unwrap()).collect();
    let drefs: Vec<&GpuBuffer<f32>> = dparts.iter().collect();
    let mut dy = poisoned(&gpu, outer * 43);
    cc::concat(&gpu, outer, &drefs, &inners, &mut dy).unwrap();
    let mut back: Vec<GpuBuffer<f32>> = inners.iter().map(|&i| poisoned(&gpu, outer * i)).collect();
    let mut brefs: Vec<&mut GpuBuffer<f32>> = back.iter_mut().collect();
    cc::split(&gpu, outer, &dy, &inners, &mut brefs).unwrap();
    for (b, p) in back.iter().zip(&parts) {
        assert_eq!(bits(&gpu.download(b).unwrap()), bits(p));
    }
}

#[test]
fn bad_shapes_are_refused_like_the_cpu() {
    let Some(gpu) = gpu_or_skip("bad_shapes_are_refused_like_the_cpu") else {
        return;
    };
    let (h4, h6) = (vec![1.0f32; 4], vec![1.0f32; 6]);
    let (d4, d6) = (gpu.upload(&h4).unwrap(), gpu.upload(&h6).unwrap());
    let mut y = poisoned(&gpu, 10);
    let mut hy = vec![0.0f32; 10];
    // Part 1 too long, a part count that differs from the sizes, no parts, y too short.
    same_error(
        cc::concat(&gpu, 2, &[&d4, &d6], &[2, 2], &mut y).unwrap_err(),
        cpu::concat(2, &[&h4, &h6], &[2, 2], &mut hy).unwrap_err(),
    );
    same_error(
        cc::concat(&gpu, 2, &[&d4], &[2, 3], &mut y).unwrap_err(),
        cpu::concat(2, &[&h4], &[2, 3], &mut hy).unwrap_err(),
    );
    same_error(
        cc::concat(&gpu, 2, &[], &[], &mut y).unwrap_err(),
        cpu::concat(2, &[], &[], &mut hy).unwrap_err(),
    );
    same_error(
        cc::concat(&gpu, 2, &[&d4, &d4], &[2, 2], &mut y).unwrap_err(),
        cpu::concat(2, &[&h4, &h4], &[2, 2], &mut hy).unwrap_err(),
    );
    same_error(
        cc::concat(&gpu, 0, &[&d4], &[2], &mut y).unwrap_err(),
        cpu::concat(0, &[&h4], &[2], &mut hy).unwrap_err(),
    );
    assert!(gpu.download(&y).unwrap().iter().all(|v| v.is_nan()));
    // split: x of the wrong size, a part of the wrong size.
    let (mut p4, mut p6) = (poisoned(&gpu, 4), poisoned(&gpu, 6));
    let (mut q4, mut q6) = (vec![0.0f32; 4], vec![0.0f32; 6]);
    same_error(
        cc::split(&gpu, 2, &d6, &[2, 3], &mut [&mut p4, &mut p6]).unwrap_err(),
        cpu::split(2, &h6, &[2, 3], &mut [&mut q4, &mut q6]).unwrap_err(),
    );
    same_error(
        cc::split(&gpu, 2, &d6, &[2, 1], &mut [&mut p4, &mut p6]).unwrap_err(),
        cpu::split(2, &h6, &[2, 1], &mut [&mut q4, &mut q6]).unwrap_err(),
    );
    assert!(gpu.download(&p4).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn narrow_and_its_backward_move_one_column_block() {
    let Some(gpu) = gpu_or_skip("narrow_and_its_backward_move_one_column_block") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(43);
    // (outer, width, start, len): whole rows, one row, first / middle / last block, long rows.
    for (outer, width, start, len) in [
        (3, 5, 0, 5),
        (1, 9, 2, 4),
        (4, 7, 0, 1),
        (5, 7, 3, 2),
        (6, 7, 6, 1),
        (2, 700, 13, 300),
    ] {
        let x = random(&mut rng, outer * width);
        let want: Vec<f32> = (0..outer)
            .flat_map(|r| x[r * width + start..r * width + start + len].to_vec())
            .collect();
        let xd = gpu.upload(&x).unwrap();
        let mut y = poisoned(&gpu, outer * len);
        cc::narrow(&gpu, outer, width, start, len, &xd, &mut y).unwrap();
        assert_eq!(bits(&gpu.download(&y).unwrap()), bits(&want));
        // The backward writes the block and leaves every other element as it was.
        let mut back = x.clone();
        for r in 0..outer {
            for j in 0..len {
                back[r * width + start + j] = -want[r * len + j];
            }
        }
        let neg: Vec<f32> = want.iter().map(|v| -v).collect();
        let mut dx = gpu.upload(&x).unwrap();
        cc::narrow_backward(
            &gpu,
            outer,
            width,
            start,
            len,
            &gpu.upload(&neg).unwrap(),
            &mut dx,
        )
        .unwrap();
        assert_eq!(bits(&gpu.download(&dx).unwrap()), bits(&back));
    }
    let (xd, mut y) = (gpu.upload(&[0.0; 6]).unwrap(), poisoned(&gpu, 4));
    let e = cc::narrow(&gpu, 2, 3, 2, 2, &xd, &mut y).unwrap_err();
    assert!(
        e.msg.contains("columns 2..4 are not within 0..3"),
        "{}",
        e.msg
    );
    let e = cc::narrow(&gpu, 2, 3, 0, 1, &xd, &mut y).unwrap_err();
    assert!(
        e.msg.contains("buffer `y` has 4 elements, expected 2"),
        "{}",
        e.msg
    );
}
