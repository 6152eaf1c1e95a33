//! Device matrix products against the CPU's `matmul` on fresh random inputs: every transpose
//! combination, alpha/beta, offsets, batches with a shared (stride 0) operand; C is poisoned
//! with NaN where beta = 0. On the emulator without a GPU.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use scalarize_kernels::cpu;
use scalarize_kernels::cuda::{Gemm, Gpu, gemm};

fn rand_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn close(got: &[f32], want: &[f32], k: usize, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // Sums of k products of numbers in [-1, 1].
        let tol = 1e-5 * (k as f32).sqrt().max(1.0) * (1.0 + w.abs());
        assert!((g - w).abs() <= tol, "{what}: [{i}] gpu {g} cpu {w}");
    }
}

#[test]
fn gemm_matches_cpu_for_every_transpose_and_scale() {
    let Some(gpu) = Gpu::for_tests("gemm_matches_cpu") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(31);
    for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (17, 33, 9), (64, 31, 65)] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 2.0)] {
                let a = rand_vec(&mut rng, m * k);
                let b = rand_vec(&mut rng, k * n);
                let c0 = rand_vec(&mut rng, m * n);
                let mut want = c0.clone();
                cpu::matmul(m, k, n, &a, ta, &b, tb, &mut want, alpha, beta).unwrap();
                // Offsets inside bigger buffers; C poisoned when beta = 0 ignores it.
                let (oa, ob, oc) = (3usize, 5usize, 7usize);
                let mut ha = vec![f32::NAN; oa + a.len() + 2];
                ha[oa..oa + a.len()].copy_from_slice(&a);
                let mut hb = vec![f32::NAN; ob + b.len()];
                hb[ob..].copy_from_slice(&b);
                let mut hc = vec![f32::NAN; oc + c0.len() + 1];
                if beta != 0.0 {
                    hc[oc..oc + c0.len()].copy_from_slice(&c0);
                }
                let (da, db) = (gpu.upload(&ha).unwrap(), gpu.upload(&hb).unwrap());
                let mut dc = gpu.upload(&hc).unwrap();
                let g = Gemm::new(m, k, n).trans(ta, tb).scale(alpha, beta);
                gemm(&gpu, &g, (&da, oa), (&db, ob), (&mut dc, oc)).unwrap();
                let got = gpu.download(&dc).unwrap();
                let what = format!("m={m} k={k} n={n} ta={ta} tb={tb} alpha={alpha} beta={beta}");
                close(&got[oc..oc + m * n], &want, k, &what);
                assert!(
                    got[..oc].iter().all(|v| v.is_nan()),
                    "{what}: wrote before C"
                );
                assert!(got[oc + m * n].is_nan(), "{what}: wrote after C");
            }
        }
    }
}

#[test]
fn batched_gemm_with_a_shared_operand() {
    let Some(gpu) = Gpu::for_tests("batched_gemm") else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(32);
    let (batch, m, k, n) = (5usize, 6usize, 11usize, 13usize);
    let w = rand_vec(&mut rng, m * k); // shared, like conv weights
    let x = rand_vec(&mut rng, batch * k * n);
    let mut want = vec![0.0f32; batch * m * n];
    for bi in 0..batch {
        cpu::matmul(
            m,
            k,
            n,
            &w,
            false,
            &x[bi * k * n..(bi + 1) * k * n],
            false,
            &mut want[bi * m * n..(bi + 1) * m * n],
            1.0,
            0.0,
        )
        .unwrap();
    }
    let (dw, dx) = (gpu.upload(&w).unwrap(), gpu.upload(&x).unwrap());
    let mut dc = gpu.upload(&vec![f32::NAN; batch * m * n]).unwrap();
    let g = Gemm::new(m, k, n).batched(batch).strides(0, k * n, m * n);
    gemm(&gpu, &g, (&dw, 0), (&dx, 0), (&mut dc, 0)).unwrap();
    close(&gpu.download(&dc).unwrap(), &want, k, "shared A");

    // Contiguous batches agree with the CPU's batched product.
    let a = rand_vec(&mut rng, batch * k * m);
    let mut want = vec![0.0f32; batch * m * n];
    cpu::matmul_batched(batch, m, k, n, &a, true, &x, false, &mut want, 1.0, 0.0).unwrap();
    let da = gpu.upload(&a).unwrap();
    let g = Gemm::new(m, k, n).trans(true, false).batched(batch);
    gemm(&gpu, &g, (&da, 0), (&dx, 0), (&mut dc, 0)).unwrap();
    close(&gpu.download(&dc).unwrap(), &want, k, "batched trans_a");
}

#[test]
fn gemm_rejects_operands_too_short() {
    let Some(gpu) = Gpu::for_tests("gemm_rejects") else {
        return;
    };
    let a = gpu.zeros::<f32>(6).unwrap();
    let b = gpu.zeros::<f32>(6).unwrap();
    let mut c = gpu.zeros::<f32>(4).unwrap();
    let e = gemm(&gpu, &Gemm::new(2, 3, 2), (&a, 1), (&b, 0), (&mut c, 0))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a holds 6 elements") && e.contains("needs 7"),
        "{e}"
    );
    let e = gemm(
        &gpu,
        &Gemm::new(2, 3, 2).batched(2),
        (&a, 0),
        (&b, 0),
        (&mut c, 0),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("a holds 6"), "{e}");
    let e = gemm(&gpu, &Gemm::new(0, 3, 2), (&a, 0), (&b, 0), (&mut c, 0)).unwrap_err();
    assert!(e.to_string().contains("empty product"), "{e}");
}
