//! Ctrl-C: the first press asks running loops to stop at the next step boundary (they save
//! and exit); a second press exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler (once per process; later calls are no-ops).
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if PRESSES.fetch_add(1, Ordering::SeqCst) >= 1 {
                eprintln!("\nsecond Ctrl-C: exiting without saving");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: stopping at the next step and saving (press again to exit now)");
            REQUESTED.store(true, Ordering::SeqCst);
        });
    });
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
