//! The seeded generator each randomised method owns, so that runs reproduce.

use rand::SeedableRng;
use rand::seq::SliceRandom;

/// A small, fast generator whose stream is fixed by its algorithm (unlike `StdRng`).
pub type MethodRng = rand::rngs::Xoshiro256PlusPlus;

/// A generator seeded with `seed`.
pub fn seeded(seed: u64) -> MethodRng {
    MethodRng::seed_from_u64(seed)
}

/// The tasks other than `i`, in a fresh random order (PCGrad / GradVac projection order).
pub fn shuffled_others(rng: &mut MethodRng, i: usize, t: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..t).filter(|&j| j != i).collect();
    order.shuffle(rng);
    order
}
