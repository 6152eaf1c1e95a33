//! Solvers on the probability simplex for T x T problems: the min-norm point of a convex hull
//! (MGDA) and projected-gradient minimisation of a convex function (CAGrad).

use crate::linalg::matvec;

/// Weights `w` on the simplex minimising `w^T K w` (the min-norm element of the convex hull of
/// the gradients whose Gram matrix is K).
///
/// Frank-Wolfe as in Sener & Koltun (2018), with pairwise (away) steps so that it converges
/// linearly on the simplex, and the exact line search of a quadratic. Handles singular K, zero
/// gradients (weight moves onto them: the min norm is 0) and T = 1.
pub fn min_norm_weights(k: &[f64], t: usize) -> Vec<f64> {
    if t == 1 {
        return vec![1.0];
    }
    let scale = (0..t).map(|i| k[i * t + i]).fold(0.0, f64::max);
    let mut w = vec![1.0 / t as f64; t];
    if scale <= 0.0 {
        return w;
    }
    for _ in 0..2000 {
        let kw = matvec(k, t, &w);
        // Toward vertex: smallest (Kw)_s; away vertex: largest (Kw)_a among the support.
        let s = (0..t).min_by(|&a, &b| kw[a].total_cmp(&kw[b])).unwrap_or(0);
        let a = (0..t)
            .filter(|&i| w[i] > 0.0)
            .max_by(|&x, &y| kw[x].total_cmp(&kw[y]))
            .unwrap_or(0);
        let gap = kw[a] - kw[s];
        if s == a || gap <= 1e-13 * scale {
            break;
        }
        let curv = k[s * t + s] + k[a * t + a] - 2.0 * k[s * t + a];
        let max_step = w[a];
        let step = if curv > 0.0 {
            (gap / curv).min(max_step)
        } else {
            max_step
        };
        w[s] += step;
        w[a] -= step;
        if w[a] < 1e-300 {
            w[a] = 0.0;
        }
    }
    let sum: f64 = w.iter().sum();
    w.iter_mut().for_each(|x| *x /= sum);
    w
}

/// Euclidean projection of `v` onto the probability simplex (sort-based, Held et al.).
pub fn project_simplex(v: &[f64]) -> Vec<f64> {
    let mut u = v.to_vec();
    u.sort_by(|a, b| b.total_cmp(a));
    let mut css = 0.0;
    let mut theta = 0.0;
    for (i, &ui) in u.iter().enumerate() {
        css += ui;
        let th = (css - 1.0) / (i + 1) as f64;
        if ui - th > 0.0 {
            theta = th;
        }
    }
    v.iter().map(|&x| (x - theta).max(0.0)).collect()
}

/// Minimises a smooth convex `f` on the simplex by projected gradient descent with
/// backtracking (sufficient-decrease) line search, starting at `x0`.
pub fn minimize_on_simplex(
    f: impl Fn(&[f64]) -> f64,
    grad: impl Fn(&[f64]) -> Vec<f64>,
    x0: Vec<f64>,
    max_iter: usize,
) -> Vec<f64> {
    let mut x = x0;
    let mut fx = f(&x);
    let mut step = 1.0;
    for _ in 0..max_iter {
        let g = grad(&x);
        let mut accepted = None;
        while step > 1e-20 {
            let trial: Vec<f64> = x.iter().zip(&g).map(|(xi, gi)| xi - step * gi).collect();
            let y = project_simplex(&trial);
            let fy = f(&y);
            let lin: f64 = g
                .iter()
                .zip(y.iter().zip(&x))
                .map(|(gi, (yi, xi))| gi * (yi - xi))
                .sum();
            let dist2: f64 = y.iter().zip(&x).map(|(yi, xi)| (yi - xi) * (yi - xi)).sum();
            if fy <= fx + lin + dist2 / (2.0 * step) + 1e-15 * fx.abs() {
                accepted = Some((y, fy, dist2));
                break;
            }
            step *= 0.5;
        }
        let Some((y, fy, dist2)) = accepted else {
            break;
        };
        x = y;
        fx = fy;
        if dist2 < 1e-24 {
            break;
        }
        step *= 2.0;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_lands_on_the_simplex_and_fixes_its_points() {
        let p = project_simplex(&[0.3, -1.0, 2.0, 0.1]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(p.iter().all(|&x| x >= 0.0));
        let q = project_simplex(&[0.2, 0.5, 0.3]);
        assert!((q[0] - 0.2).abs() < 1e-12 && (q[1] - 0.5).abs() < 1e-12);
    }

    #[test]
    fn two_task_min_norm_matches_the_closed_form() {
        // g1 = (1, 0), g2 = (0.2, 1): gamma = (K22 - K12) / (K11 + K22 - 2 K12).
        let k = [1.0, 0.2, 0.2, 1.04];
        let w = min_norm_weights(&k, 2);
        let gamma = (1.04 - 0.2) / (1.0 + 1.04 - 0.4);
        assert!((w[0] - gamma).abs() < 1e-12, "{w:?} vs {gamma}");
    }

    #[test]
    fn projected_gradient_finds_a_quadratic_minimum() {
        // min (x0 - 0.7)^2 + (x1 - 0.6)^2 on the simplex: x = (0.55, 0.45).
        let x = minimize_on_simplex(
            |x| (x[0] - 0.7).powi(2) + (x[1] - 0.6).powi(2),
            |x| vec![2.0 * (x[0] - 0.7), 2.0 * (x[1] - 0.6)],
            vec![0.5, 0.5],
            500,
        );
        assert!((x[0] - 0.55).abs() < 1e-9, "{x:?}");
    }
}
