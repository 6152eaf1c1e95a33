//! The small box-constrained QP of UPGrad: `min_v v^T K v` subject to `v >= lower`.

use crate::linalg::matvec;

/// Solves `min_v v^T K v, v >= lower` for a positive semidefinite K by cyclic projected
/// coordinate descent on `z = v - lower >= 0` (exact minimisation per coordinate).
///
/// At the optimum `(K v)_j >= 0` for every j (the KKT multipliers), which is what makes the
/// UPGrad direction non-conflicting. Coordinates with `K_jj = 0` (zero gradients) keep
/// `z_j = 0`; they cannot change the objective. Stops when no coordinate moves by more than
/// `1e-15` relative to the largest entry of v, or after 100,000 sweeps.
pub fn min_quadratic_above(k: &[f64], t: usize, lower: &[f64]) -> Vec<f64> {
    let mut v = lower.to_vec();
    let mut kv = matvec(k, t, &v);
    let vscale = lower.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-300);
    for _sweep in 0..100_000 {
        let mut moved = 0.0f64;
        for j in 0..t {
            let kjj = k[j * t + j];
            if kjj <= 0.0 {
                continue;
            }
            // Exact minimiser along coordinate j, clipped to the bound.
            let target = (v[j] - kv[j] / kjj).max(lower[j]);
            let delta = target - v[j];
            if delta != 0.0 {
                v[j] = target;
                for i in 0..t {
                    kv[i] += k[i * t + j] * delta;
                }
                moved = moved.max(delta.abs());
            }
        }
        if moved <= 1e-15 * vscale.max(v.iter().fold(0.0f64, |m, x| m.max(x.abs()))) {
            break;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inactive_bound_gives_the_projection_onto_the_dual_cone() {
        // g1 = (1, 0), g2 = (-1, 1): v >= (1, 0); optimum v = (1, 0.5): (Kv)_2 = 0.
        let k = [1.0, -1.0, -1.0, 2.0];
        let v = min_quadratic_above(&k, 2, &[1.0, 0.0]);
        assert!(
            (v[0] - 1.0).abs() < 1e-12 && (v[1] - 0.5).abs() < 1e-9,
            "{v:?}"
        );
    }
}
