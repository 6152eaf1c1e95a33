//! No-grad mode: while a guard lives, ops on this thread record nothing.

use std::cell::Cell;
use std::marker::PhantomData;

thread_local! {
    static NO_GRAD_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// While alive, ops on the current thread record nothing on the tape (evaluation mode).
/// Guards nest; dropping the last one re-enables recording.
#[must_use = "recording resumes as soon as the guard is dropped"]
pub struct NoGradGuard {
    // The depth counter is per thread, so the guard must stay on its thread.
    _not_send: PhantomData<*const ()>,
}

/// Disables recording on this thread until the returned guard is dropped.
pub fn no_grad() -> NoGradGuard {
    NO_GRAD_DEPTH.with(|d| d.set(d.get() + 1));
    NoGradGuard {
        _not_send: PhantomData,
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        NO_GRAD_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// True when ops on this thread record themselves (no [`NoGradGuard`] is alive).
pub fn is_grad_enabled() -> bool {
    NO_GRAD_DEPTH.with(|d| d.get() == 0)
}
