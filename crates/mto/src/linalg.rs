//! Small dense f64 linear algebra for T x T problems (T is at most a few dozen).
//! Matrices are row-major `&[f64]` of size n x n (or m x n where stated).

/// `A x` for an n x n matrix.
pub fn matvec(a: &[f64], n: usize, x: &[f64]) -> Vec<f64> {
    (0..n)
        .map(|i| (0..n).map(|j| a[i * n + j] * x[j]).sum())
        .collect()
}

/// `x^T A x`.
pub fn quad(a: &[f64], n: usize, x: &[f64]) -> f64 {
    matvec(a, n, x).iter().zip(x).map(|(ax, xi)| ax * xi).sum()
}

/// Trace of an n x n matrix.
pub fn trace(a: &[f64], n: usize) -> f64 {
    (0..n).map(|i| a[i * n + i]).sum()
}

/// Eigen-decomposition of a symmetric n x n matrix by cyclic Jacobi rotations.
///
/// Returns `(values, vectors)` with `vectors[i * n + k]` the i-th component of the k-th
/// eigenvector. Robust for singular and indefinite matrices; cost O(n^3) per sweep.
pub fn sym_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    // Symmetrise against rounding in the caller's matrix.
    for i in 0..n {
        for j in i + 1..n {
            let s = 0.5 * (m[i * n + j] + m[j * n + i]);
            m[i * n + j] = s;
            m[j * n + i] = s;
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = m.iter().map(|x| x * x).sum::<f64>().sqrt();
    if scale == 0.0 {
        return (vec![0.0; n], v);
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * n + j] * m[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = m[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (m[q * n + q] - m[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let mkp = m[k * n + p];
                    let mkq = m[k * n + q];
                    m[k * n + p] = c * mkp - s * mkq;
                    m[k * n + q] = s * mkp + c * mkq;
                }
                for k in 0..n {
                    let mpk = m[p * n + k];
                    let mqk = m[q * n + k];
                    m[p * n + k] = c * mpk - s * mqk;
                    m[q * n + k] = s * mpk + c * mqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i * n + i]).collect(), v)
}

/// Solves `A x = b` for a symmetric positive definite n x n `A` by Cholesky; `None` if a pivot
/// is not positive (the matrix is not numerically positive definite).
pub fn cholesky_solve(a: &[f64], n: usize, b: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * y[k]).sum();
        y[i] = (b[i] - s) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * x[k]).sum();
        x[i] = (y[i] - s) / l[i * n + i];
    }
    Some(x)
}

/// Minimum-norm least-squares solution of `A x = b` for an m x n `A`: the pseudo-inverse
/// applied to `b`, with singular values below `rel_tol * sigma_max` treated as zero.
pub fn lstsq_min_norm(a: &[f64], m: usize, n: usize, b: &[f64], rel_tol: f64) -> Vec<f64> {
    // A^T A = V S^2 V^T;  x = V S^-2 V^T A^T b over the kept singular values.
    let mut ata = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            ata[i * n + j] = (0..m).map(|k| a[k * n + i] * a[k * n + j]).sum();
        }
    }
    let atb: Vec<f64> = (0..n)
        .map(|i| (0..m).map(|k| a[k * n + i] * b[k]).sum())
        .collect();
    let (vals, vecs) = sym_eigen(&ata, n);
    let max = vals.iter().cloned().fold(0.0, f64::max);
    let cut = max * rel_tol * rel_tol;
    let mut x = vec![0.0; n];
    for k in 0..n {
        if vals[k] > cut && vals[k] > 0.0 {
            let proj: f64 = (0..n).map(|i| vecs[i * n + k] * atb[i]).sum::<f64>() / vals[k];
            for i in 0..n {
                x[i] += proj * vecs[i * n + k];
            }
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_reconstructs_a_random_symmetric_matrix() {
        let n = 5;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = ((i * 7 + j * 3) as f64).sin() * 2.0 + if i == j { 0.3 } else { 0.0 };
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (vals, v) = sym_eigen(&a, n);
        for i in 0..n {
            for j in 0..n {
                let r: f64 = (0..n).map(|k| v[i * n + k] * vals[k] * v[j * n + k]).sum();
                assert!(
                    (r - a[i * n + j]).abs() < 1e-10,
                    "{i},{j}: {r} vs {}",
                    a[i * n + j]
                );
            }
        }
    }

    #[test]
    fn cholesky_solves_and_lstsq_gives_min_norm() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let b = [1.0, -2.0, 0.7];
        let x = cholesky_solve(&a, 3, &b).unwrap();
        let ax = matvec(&a, 3, &x);
        for i in 0..3 {
            assert!((ax[i] - b[i]).abs() < 1e-12);
        }
        let y = lstsq_min_norm(&a, 3, 3, &b, 1e-12);
        for i in 0..3 {
            assert!((x[i] - y[i]).abs() < 1e-9);
        }
        // One equation x0 + x1 = 2: the min-norm solution is (1, 1).
        let z = lstsq_min_norm(&[1.0, 1.0], 1, 2, &[2.0], 1e-12);
        assert!((z[0] - 1.0).abs() < 1e-12 && (z[1] - 1.0).abs() < 1e-12);
        assert!(cholesky_solve(&[1.0, 1.0, 1.0, 1.0], 2, &[1.0, 1.0]).is_none());
    }
}
