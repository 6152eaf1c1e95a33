//! Counter-based randomness: every random choice is a pure function of (seed, epoch, index).
//!
//! A hand-rolled SplitMix64 rather than `rand`, so that a given seed yields the same crops,
//! flips and shuffles across crate versions and platforms (`rand` documents no such guarantee).

/// Mixes one 64-bit word (the SplitMix64 finaliser).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a sequence of words into one seed.
pub fn hash(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |acc, &w| mix(acc ^ mix(w)))
}

/// A small sequential generator (SplitMix64 stream) seeded from [`hash`].
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose stream depends only on `words` (e.g. `[seed, epoch, index]`).
    pub fn from_words(words: &[u64]) -> Self {
        Rng { state: hash(words) }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A fair coin.
    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// The permutation of `0..n` used for `(seed, epoch)`; `stream` separates independent uses.
pub fn permutation(n: usize, seed: u64, epoch: u64, stream: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    Rng::from_words(&[seed, epoch, stream, 0x5045_524D]).shuffle(&mut p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_epoch() {
        let a = permutation(1000, 7, 0, 0);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
        assert_ne!(a, permutation(1000, 7, 1, 0));
        assert_eq!(a, permutation(1000, 7, 0, 0));
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut r = Rng::from_words(&[1]);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[r.below(7)] += 1;
        }
        // Binomial sd ~ 93; 6 sd bound.
        for c in counts {
            assert!((c as i64 - 10_000).abs() < 560, "{counts:?}");
        }
    }
}
