//! Moves on the probability simplex `{w : w_i >= floor, sum_i w_i = 1}`.
//!
//! The scalarization weights p live here. Every function returns a point of the floored
//! simplex (up to rounding of order 1e-15), which the tests check as invariants.

use rand::RngExt;
use rand_distr::Distribution;
use rand_distr::multi::Dirichlet;

use crate::rng::PbtRng;

/// Largest floor allowed for dimension `dim` (all weights equal to the floor).
pub fn max_floor(dim: usize) -> f64 {
    1.0 / dim as f64
}

/// Euclidean projection of `w` onto the floored simplex, in place.
///
/// Projects `w - floor` onto the simplex of mass `1 - dim * floor` (sort-based algorithm of
/// Duchi et al., 2008), then adds the floor back.
pub fn project(w: &mut [f64], floor: f64) {
    let n = w.len();
    if n == 0 {
        return;
    }
    let mass = (1.0 - n as f64 * floor).max(0.0);
    if mass == 0.0 {
        w.iter_mut().for_each(|x| *x = floor);
        return;
    }
    let mut u: Vec<f64> = w
        .iter()
        .map(|&x| if x.is_finite() { x - floor } else { 0.0 })
        .collect();
    u.sort_by(|a, b| b.total_cmp(a));
    let mut cum = 0.0;
    let mut theta = 0.0;
    for (j, &uj) in u.iter().enumerate() {
        cum += uj;
        let t = (cum - mass) / (j + 1) as f64;
        if uj - t > 0.0 {
            theta = t;
        }
    }
    for x in w.iter_mut() {
        let y = if x.is_finite() { *x - floor } else { 0.0 };
        *x = (y - theta).max(0.0) + floor;
    }
    renormalise_above_floor(w, floor);
}

/// Removes the rounding residue of the sum by scaling the part above the floor.
fn renormalise_above_floor(w: &mut [f64], floor: f64) {
    let n = w.len() as f64;
    let mass = 1.0 - n * floor;
    let above: f64 = w.iter().map(|x| x - floor).sum();
    if above > 0.0 && mass > 0.0 {
        let s = mass / above;
        w.iter_mut().for_each(|x| *x = floor + (*x - floor) * s);
    }
}

/// A uniform draw from the floored simplex (a flat Dirichlet mapped above the floor).
pub fn sample_uniform(dim: usize, floor: f64, rng: &mut PbtRng) -> Vec<f64> {
    // Normalised exponentials are Dirichlet(1, ..., 1).
    let mut e: Vec<f64> = (0..dim)
        .map(|_| -(1.0 - rng.random::<f64>()).ln())
        .collect();
    let s: f64 = e.iter().sum();
    let mass = 1.0 - dim as f64 * floor;
    e.iter_mut().for_each(|x| *x = floor + mass * *x / s);
    e
}

/// Multiplicative perturbation: each weight is multiplied by one of `factors` chosen at
/// random, then the vector is renormalised and projected above the floor.
///
/// A weight at exactly 0 (possible only with floor 0) stays 0; resampling moves it.
pub fn perturb_multiplicative(
    w: &[f64],
    factors: &[f64],
    floor: f64,
    rng: &mut PbtRng,
) -> Vec<f64> {
    let chosen: Vec<f64> = w
        .iter()
        .map(|_| {
            if factors.is_empty() {
                1.0
            } else {
                factors[rng.random_range(0..factors.len())]
            }
        })
        .collect();
    if chosen.windows(2).all(|p| p[0] == p[1]) {
        // Equal factors cancel in the renormalisation: keep the weights bit for bit.
        let mut out = w.to_vec();
        project(&mut out, floor);
        return out;
    }
    let mut out: Vec<f64> = w.iter().zip(&chosen).map(|(x, f)| x * f).collect();
    let s: f64 = out.iter().sum();
    if s > 0.0 && s.is_finite() {
        out.iter_mut().for_each(|x| *x /= s);
    } else {
        out.iter_mut().for_each(|x| *x = 1.0 / w.len() as f64);
    }
    project(&mut out, floor);
    out
}

/// A Dirichlet draw centred on `w`: `Dirichlet(concentration * w)`, whose mean is `w`;
/// larger concentration gives smaller moves. Projected above the floor.
pub fn perturb_dirichlet(w: &[f64], concentration: f64, floor: f64, rng: &mut PbtRng) -> Vec<f64> {
    // Alphas must be positive and normal; a weight at 0 gets a tiny alpha so it can revive.
    let alpha: Vec<f64> = w.iter().map(|&x| (concentration * x).max(1e-3)).collect();
    let mut out = match Dirichlet::new(&alpha) {
        Ok(d) => {
            let v: Vec<f64> = d.sample(rng);
            if v.iter().all(|x| x.is_finite()) {
                v
            } else {
                w.to_vec()
            }
        }
        // Dimension 1: the only point of the simplex.
        Err(_) => w.to_vec(),
    };
    project(&mut out, floor);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, stream};

    fn assert_on_simplex(w: &[f64], floor: f64) {
        let s: f64 = w.iter().sum();
        assert!((s - 1.0).abs() < 1e-12, "sum {s} for {w:?}");
        for &x in w {
            assert!(x >= floor - 1e-15, "{x} below floor {floor} in {w:?}");
        }
    }

    #[test]
    fn projection_matches_brute_force_in_2d() {
        // In 2-D the floored simplex is a segment; the projection is the clamp of the
        // orthogonal projection onto the line x0 + x1 = 1.
        let mut rng = stream(1, Purpose::Init, 0, 0);
        for _ in 0..200 {
            let a: f64 = rng.random_range(-2.0..3.0);
            let b: f64 = rng.random_range(-2.0..3.0);
            let floor = rng.random_range(0.0..0.4);
            let mut w = [a, b];
            project(&mut w, floor);
            let x0 = ((a - b + 1.0) / 2.0).clamp(floor, 1.0 - floor);
            assert!((w[0] - x0).abs() < 1e-12, "{a} {b} {floor}: {w:?} vs {x0}");
            assert_on_simplex(&w, floor);
        }
    }

    #[test]
    fn projection_keeps_interior_points_and_is_idempotent() {
        let mut w = vec![0.1, 0.2, 0.3, 0.4];
        project(&mut w, 0.05);
        for (a, b) in w.iter().zip([0.1, 0.2, 0.3, 0.4]) {
            assert!((a - b).abs() < 1e-15);
        }
        let mut v = vec![5.0, -1.0, 0.3, 0.01, 2.0];
        project(&mut v, 0.03);
        let once = v.clone();
        project(&mut v, 0.03);
        for (a, b) in v.iter().zip(&once) {
            assert!((a - b).abs() < 1e-14);
        }
        assert_on_simplex(&v, 0.03);
    }

    #[test]
    fn all_moves_stay_on_the_floored_simplex() {
        let mut rng = stream(2, Purpose::Decision, 0, 0);
        for dim in [1usize, 2, 3, 7, 40] {
            for floor in [0.0, 0.001, max_floor(dim) * 0.5, max_floor(dim)] {
                for _ in 0..50 {
                    let w = sample_uniform(dim, floor, &mut rng);
                    assert_on_simplex(&w, floor);
                    let m = perturb_multiplicative(&w, &[0.8, 1.2], floor, &mut rng);
                    assert_on_simplex(&m, floor);
                    let d = perturb_dirichlet(&w, 50.0, floor, &mut rng);
                    assert_on_simplex(&d, floor);
                }
            }
        }
    }

    #[test]
    fn dirichlet_move_is_centred_on_current_weights() {
        let mut rng = stream(3, Purpose::Decision, 0, 0);
        let w = [0.6, 0.3, 0.1];
        let n = 4000;
        let mut mean = [0.0; 3];
        for _ in 0..n {
            let d = perturb_dirichlet(&w, 100.0, 0.0, &mut rng);
            for i in 0..3 {
                mean[i] += d[i] / n as f64;
            }
        }
        for i in 0..3 {
            assert!((mean[i] - w[i]).abs() < 0.01, "{mean:?}");
        }
    }

    #[test]
    fn multiplicative_move_changes_ratios_by_the_factors() {
        let mut rng = stream(4, Purpose::Decision, 0, 0);
        let w = [0.25, 0.25, 0.5];
        let m = perturb_multiplicative(&w, &[0.8, 1.2], 0.0, &mut rng);
        // Ratio of any two weights is scaled by 1, 1.5 or 2/3.
        let r = (m[0] / m[2]) / (w[0] / w[2]);
        let ok = [1.0, 1.5, 2.0 / 3.0].iter().any(|f| (r - f).abs() < 1e-12);
        assert!(ok, "ratio {r}");
    }
}
