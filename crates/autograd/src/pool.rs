//! Recycled host buffers for op outputs that kernels overwrite entirely.
//!
//! A training step allocates and drops the same activation and gradient buffers every step. A
//! fresh `vec![0.0; n]` from a reused heap block is zero-filled by `calloc`, a full write pass
//! over memory that the kernel then overwrites again (about 8% of a ResNet-26 step on 2 cores).
//! Dropped tensor storages and consumed gradients are kept here by length, and
//! [`for_overwrite`] hands them back with their old contents. In debug builds (the test
//! profile) every buffer it returns is filled with NaN instead, so that an op that leaves part
//! of its output unwritten shows up in the gradient and value tests.
//!
//! Only lengths that ops have asked for are kept (a gradient buffer whose length no op output
//! has would otherwise sit here and push malloc onto fresh pages every step), and the oldest
//! buffers are freed first when the held bytes pass the cap.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, OnceLock};

/// Buffers shorter than this are not pooled: malloc and a small zero fill cost less than the
/// lock.
const MIN_LEN: usize = 4096;

/// Default cap on the bytes held for reuse (`SCALARIZE_BUFFER_POOL_MB` overrides, 0 disables).
const DEFAULT_CAP_MB: usize = 512;

#[derive(Default)]
struct Pool {
    /// Free buffers by length, each with its arrival number, oldest first.
    free: HashMap<usize, VecDeque<(u64, Vec<f32>)>>,
    /// Lengths `for_overwrite` has been asked for.
    wanted: HashSet<usize>,
    /// Buffers taken back so far (the next arrival number).
    arrivals: u64,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
static CAP: OnceLock<usize> = OnceLock::new();

fn cap_bytes() -> usize {
    *CAP.get_or_init(|| {
        std::env::var("SCALARIZE_BUFFER_POOL_MB")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(DEFAULT_CAP_MB)
            .saturating_mul(1 << 20)
    })
}

/// A buffer of `n` values for a kernel to overwrite: a recycled one with stale contents when
/// one of that length is free, else a fresh zeroed one (NaN-filled in debug builds).
pub(crate) fn for_overwrite(n: usize) -> Vec<f32> {
    scalarize_kernels::cpu::keep_freed_buffers();
    let reused = if n >= MIN_LEN {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let p = guard.get_or_insert_with(Pool::default);
        p.wanted.insert(n);
        // The newest buffer of that length: the likeliest to be still in cache.
        let v = p.free.get_mut(&n).and_then(VecDeque::pop_back);
        if v.is_some() {
            p.bytes -= n * 4;
        }
        v.map(|(_, v)| v)
    } else {
        None
    };
    let mut v = reused.unwrap_or_else(|| fresh(n));
    if cfg!(debug_assertions) {
        v.fill(f32::NAN);
    }
    v
}

/// A fresh zeroed buffer, large ones advised onto transparent huge pages before first touch.
pub(crate) fn fresh(n: usize) -> Vec<f32> {
    let v = vec![0.0; n];
    scalarize_kernels::cpu::advise_huge_pages(&v);
    v
}

/// Takes back a buffer nobody uses any more (kept if large enough and under the cap).
pub(crate) fn recycle(v: Vec<f32>) {
    let n = v.len();
    if n < MIN_LEN || v.capacity() != n {
        return;
    }
    let (bytes, cap) = (n * 4, cap_bytes());
    if bytes > cap {
        return;
    }
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let p = guard.get_or_insert_with(Pool::default);
    if !p.wanted.contains(&n) {
        return;
    }
    p.bytes += bytes;
    p.free.entry(n).or_default().push_back((p.arrivals, v));
    p.arrivals += 1;
    // Beyond the cap, free the oldest buffers (the fronts of the lists hold each length's
    // oldest; there are few lengths, and this runs only when over the cap).
    let mut evicted = Vec::new();
    while p.bytes > cap {
        let Some(list) = p
            .free
            .values_mut()
            .filter(|l| !l.is_empty())
            .min_by_key(|l| l.front().map(|(a, _)| *a))
        else {
            break;
        };
        if let Some((_, old)) = list.pop_front() {
            p.bytes -= old.len() * 4;
            evicted.push(old);
        }
    }
    drop(guard);
    // Freed outside the lock.
    drop(evicted);
}

/// Bytes currently held for reuse.
pub fn held_bytes() -> usize {
    let guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().map_or(0, |p| p.bytes)
}

/// Frees every held buffer (e.g. between phases with different shapes).
pub fn release_all() {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    *guard = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_count(n: usize) -> usize {
        let guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .and_then(|p| p.free.get(&n))
            .map_or(0, VecDeque::len)
    }

    #[test]
    fn recycles_by_length_and_poisons_in_debug() {
        // Unique lengths so that other tests running in parallel cannot take these buffers.
        let n = MIN_LEN + 12_345;
        // A length no op has asked for is not kept.
        recycle(vec![1.5f32; n]);
        assert_eq!(free_count(n), 0);
        let _first_request = for_overwrite(n);
        let v = vec![1.5f32; n];
        let ptr = v.as_ptr();
        recycle(v);
        assert_eq!(free_count(n), 1);
        assert!(held_bytes() >= n * 4);
        let w = for_overwrite(n);
        assert_eq!(w.len(), n);
        assert_eq!(w.as_ptr(), ptr, "the recycled buffer is handed back");
        if cfg!(debug_assertions) {
            assert!(w.iter().all(|x| x.is_nan()));
        }
        // A different length gets a fresh buffer.
        let fresh = for_overwrite(n + 1);
        assert_eq!(fresh.len(), n + 1);
        assert_ne!(fresh.as_ptr(), ptr);
    }
}
