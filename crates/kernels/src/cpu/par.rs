//! A call's chunks on rayon's pool or on the calling thread: the same chunks, mapped in the
//! same order and collected in order either way (so the results are the same bit for bit).
//! Entering the pool from a thread outside it wakes a worker and sleeps the caller, which
//! costs more than a small call's whole work; each kernel decides `pool` from its size.

use rayon::prelude::*;

/// `f(i)` for i in 0..count, in order.
pub(crate) fn map_range<R, F>(pool: bool, count: usize, f: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync + Send,
{
    if pool {
        (0..count).into_par_iter().map(f).collect()
    } else {
        (0..count).map(f).collect()
    }
}

/// `f((index, chunk))` over the `size`-element chunks of `data`, in order.
pub(crate) fn map_chunks<T, R, F>(pool: bool, data: &[T], size: usize, f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn((usize, &[T])) -> R + Sync + Send,
{
    if pool {
        data.par_chunks(size).enumerate().map(f).collect()
    } else {
        data.chunks(size).enumerate().map(f).collect()
    }
}

/// `f((index, chunk))` over the `size`-element mutable chunks of `data`, in order.
pub(crate) fn map_chunks_mut<T, R, F>(pool: bool, data: &mut [T], size: usize, f: F) -> Vec<R>
where
    T: Send,
    R: Send,
    F: Fn((usize, &mut [T])) -> R + Sync + Send,
{
    if pool {
        data.par_chunks_mut(size).enumerate().map(f).collect()
    } else {
        data.chunks_mut(size).enumerate().map(f).collect()
    }
}
