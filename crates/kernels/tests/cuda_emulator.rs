//! The CUDA emulator itself: correct kernels give the right answers, and the bugs it exists to
//! catch (missing barriers, out-of-bounds writes, collectives with exited lanes, dangling
//! pointers) fail. Skipped with a printed reason where no C++ compiler is present.

use std::sync::Arc;

use scalarize_kernels::cuda::emu::{Emulator, RawArg};
use scalarize_kernels::cuda::sources::KernelSource;
use scalarize_kernels::cuda::{Arg, Gpu, LaunchConfig};

const SELFTEST: KernelSource = KernelSource {
    name: "emu_selftest.cu",
    text: include_str!("emu/selftest.cu"),
};

fn emulator(test: &str) -> Option<Arc<Gpu>> {
    match Gpu::emulated() {
        Ok(g) => Some(g),
        Err(why) if std::env::var("SCALARIZE_REQUIRE_EMULATOR").is_ok_and(|v| v == "1") => {
            panic!("{test}: SCALARIZE_REQUIRE_EMULATOR=1 but no emulator: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

fn cfg(grid: (u32, u32, u32), block: (u32, u32, u32), shared: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: block,
        shared_mem_bytes: shared,
    }
}

/// 512 distinct floats whose per-block sums are exact in f32.
fn inputs() -> Vec<f32> {
    (0..512).map(|i| ((i * 37) % 101) as f32 - 50.0).collect()
}

fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks(256).map(|c| c.iter().sum()).collect()
}

/// Runs block-sum `kernel` on [`inputs`] (two blocks of 256 threads) and returns the sums.
fn run_block_sum(gpu: &Gpu, kernel: &str) -> Vec<f32> {
    let dx = gpu.upload(&inputs()).unwrap();
    let mut out = gpu.alloc::<f32>(2).unwrap();
    gpu.launch(
        &SELFTEST,
        kernel,
        cfg((2, 1, 1), (256, 1, 1), 0),
        &[dx.arg(), out.arg_mut()],
    )
    .unwrap();
    gpu.download(&out).unwrap()
}

#[test]
fn barrier_reduction_is_exact_and_a_missing_barrier_is_exposed() {
    let Some(gpu) = emulator("barrier_reduction") else {
        return;
    };
    let want = block_sums(&inputs());
    assert_eq!(run_block_sum(&gpu, "st_block_sum"), want);
    let racy = run_block_sum(&gpu, "st_block_sum_racy");
    assert_ne!(racy, want, "the race went unnoticed");
}

#[test]
fn out_of_bounds_write_names_kernel_and_argument() {
    let Some(gpu) = emulator("out_of_bounds_write") else {
        return;
    };
    let mut out = gpu.alloc::<f32>(100).unwrap();
    let e = gpu
        .launch(
            &SELFTEST,
            "st_oob_write",
            cfg((4, 1, 1), (32, 1, 1), 0),
            &[out.arg_mut(), Arg::i32(100)],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("st_oob_write") && e.contains("argument 0"),
        "{e}"
    );
    assert!(e.contains("offset 400"), "{e}");
    // Within bounds it is fine.
    gpu.launch(
        &SELFTEST,
        "st_oob_write",
        cfg((4, 1, 1), (32, 1, 1), 0),
        &[out.arg_mut(), Arg::i32(99)],
    )
    .unwrap();
}

/// Runs `st_shuffles` on one warp and checks every lane's eight results.
fn check_shuffles(gpu: &Gpu) {
    let mut out = gpu.alloc::<i32>(32 * 8).unwrap();
    gpu.launch(
        &SELFTEST,
        "st_shuffles",
        cfg((1, 1, 1), (32, 1, 1), 0),
        &[out.arg_mut()],
    )
    .unwrap();
    let got = gpu.download(&out).unwrap();
    let ballot = (0..32).filter(|l| l % 3 == 0).fold(0u32, |m, l| m | 1 << l) as i32;
    for l in 0..32i32 {
        let o = &got[l as usize * 8..l as usize * 8 + 8];
        let down = if l + 3 < 32 { (l + 3) * 10 } else { l * 10 };
        let up = if l >= 2 { l - 2 } else { l };
        let down8 = if l % 8 + 3 < 8 { l + 3 } else { l };
        let xor16 = (((l ^ 16) as f64 * 0.5) as i32) * 2;
        let want = [l ^ 5, down, up, (31 - l) * 3, ballot, 1, down8, xor16];
        assert_eq!(o, want, "lane {l}");
    }
}

/// Runs `st_indices` on a gx x gy grid of bx x by blocks and checks every thread's coordinates.
fn check_indices(gpu: &Gpu, (gx, gy): (u32, u32), (bx, by): (u32, u32)) {
    let mut out = gpu.alloc::<i32>((gx * gy * bx * by) as usize).unwrap();
    gpu.launch(
        &SELFTEST,
        "st_indices",
        cfg((gx, gy, 1), (bx, by, 1), 0),
        &[out.arg_mut()],
    )
    .unwrap();
    let got = gpu.download(&out).unwrap();
    let width = gx * bx;
    for y in 0..gy * by {
        for x in 0..width {
            let want = (x / bx) * 1000 + (y / by) * 100 + (x % bx) * 10 + y % by;
            assert_eq!(got[(y * width + x) as usize], want as i32, "({x}, {y})");
        }
    }
}

/// Runs `st_exited_lane` (lanes 1..31 stop inside a warp collective) and returns its error.
fn exited_lane_error(gpu: &Gpu) -> String {
    let mut out = gpu.zeros::<f32>(32).unwrap();
    gpu.launch(
        &SELFTEST,
        "st_exited_lane",
        cfg((1, 1, 1), (32, 1, 1), 0),
        &[out.arg_mut()],
    )
    .unwrap_err()
    .to_string()
}

/// Runs `st_params` (each of 64 threads adds its index to its copy of `n`) and returns the
/// results.
fn run_params(gpu: &Gpu, n: i32) -> Vec<i32> {
    let mut out = gpu.alloc::<i32>(64).unwrap();
    gpu.launch(
        &SELFTEST,
        "st_params",
        cfg((1, 1, 1), (64, 1, 1), 0),
        &[Arg::i32(n), out.arg_mut()],
    )
    .unwrap();
    gpu.download(&out).unwrap()
}

#[test]
fn warp_collectives_follow_cuda_semantics() {
    let Some(gpu) = emulator("warp_collectives") else {
        return;
    };
    check_shuffles(&gpu);
}

/// Each thread slot's coroutine is reused by later blocks and launches: a launch that failed
/// with threads stopped mid-kernel, a larger block (new stacks) and a smaller one after it must
/// all start every thread at the top of its own kernel with its own parameters.
#[test]
fn thread_coroutines_are_reused_across_blocks_launches_and_errors() {
    let Some(gpu) = emulator("coroutine_reuse") else {
        return;
    };
    for round in 0..2 {
        // Lanes 1..31 stop inside a warp collective of a kernel that fails.
        let e = exited_lane_error(&gpu);
        assert!(e.contains("exited"), "{e}");
        check_shuffles(&gpu);
        // Two blocks of 256 with barriers: block 1 runs on the coroutines block 0 left.
        let sums = run_block_sum(&gpu, "st_block_sum");
        assert_eq!(sums, block_sums(&inputs()), "round {round}");
        let want: Vec<i32> = (0..64).map(|i| 100 * round + i).collect();
        assert_eq!(run_params(&gpu, 100 * round), want, "round {round}");
        // 1,024 threads per block: more slots than any launch before.
        check_indices(&gpu, (2, 2), (32, 32));
    }
}

#[test]
fn collective_with_an_exited_lane_is_an_error() {
    let Some(gpu) = emulator("exited_lane") else {
        return;
    };
    let e = exited_lane_error(&gpu);
    assert!(e.contains("exited"), "{e}");
}

#[test]
fn threads_get_their_own_parameters_and_indices() {
    let Some(gpu) = emulator("params_and_indices") else {
        return;
    };
    assert_eq!(run_params(&gpu, 1000), (1000..1064).collect::<Vec<_>>());

    check_indices(&gpu, (3, 2), (4, 2));
}

#[test]
fn dynamic_shared_memory_has_the_launch_size() {
    let Some(gpu) = emulator("dynamic_shared") else {
        return;
    };
    let x = inputs();
    let dx = gpu.upload(&x).unwrap();
    let mut out = gpu.alloc::<f32>(512).unwrap();
    gpu.launch(
        &SELFTEST,
        "st_dynamic_shared",
        cfg((4, 1, 1), (128, 1, 1), 128 * 4),
        &[dx.arg(), out.arg_mut()],
    )
    .unwrap();
    let want: Vec<f32> = x
        .chunks(128)
        .flat_map(|c| c.iter().rev().copied())
        .collect();
    assert_eq!(gpu.download(&out).unwrap(), want);
}

#[test]
fn dangling_pointer_and_unknown_kernel_are_errors() {
    let emu = match Emulator::new() {
        Ok(e) => e,
        Err(why) => {
            eprintln!("SKIPPED dangling_pointer: {why}");
            return;
        }
    };
    let e = emu
        .launch(
            &SELFTEST,
            "st_params",
            (1, 1, 1),
            (1, 1, 1),
            0,
            &[RawArg::I32(1), RawArg::Ptr(0x10)],
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("argument 1") && e.contains("no live"), "{e}");
    let e = emu
        .launch(&SELFTEST, "nope", (1, 1, 1), (1, 1, 1), 0, &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`nope`"), "{e}");
}

#[test]
fn impossible_allocations_are_errors_not_aborts() {
    let Some(gpu) = emulator("impossible_allocations") else {
        return;
    };
    let e = gpu.alloc::<f32>(usize::MAX / 2).unwrap_err().to_string();
    assert!(e.contains("cannot allocate"), "{e}");
    let e = gpu
        .zeros::<f64>(usize::MAX / 8 - 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot allocate"), "{e}");
}
