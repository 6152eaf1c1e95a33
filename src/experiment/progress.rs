//! Progress: indicatif bars with throughput and ETA on a terminal, plain log lines otherwise.

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared by all runs of a command.
#[derive(Clone)]
pub struct Progress {
    multi: Option<MultiProgress>,
}

/// One run's bar (or its log lines).
pub struct RunBar {
    bar: Option<ProgressBar>,
    name: String,
    total: u64,
}

impl Progress {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        let multi = std::io::stderr()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress { multi }
    }

    /// A bar of `total` steps for run `name`, starting at `start`.
    pub fn run(&self, name: &str, total: u64, start: u64) -> RunBar {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(total));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {pos}/{len} steps {per_sec} ETA {eta} {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            b.set_prefix(name.to_string());
            b.set_position(start);
            b.reset_eta();
            b
        });
        RunBar {
            bar,
            name: name.to_string(),
            total,
        }
    }

    /// A line that does not disturb the bars.
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl RunBar {
    /// Moves to `step` with a status message (printed as a line when there is no bar).
    pub fn update(&self, step: u64, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.set_position(step);
                b.set_message(msg.to_string());
            }
            None => eprintln!("[{}] step {step}/{} {msg}", self.name, self.total),
        }
    }

    /// Advances by `n` steps (work done by any thread) with a status message.
    pub fn inc(&self, n: u64, msg: &str) {
        match &self.bar {
            Some(b) => {
                b.inc(n);
                b.set_message(msg.to_string());
            }
            None => eprintln!("[{}] {msg}", self.name),
        }
    }

    /// Finishes the bar, leaving `msg`.
    pub fn finish(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.finish_with_message(msg.to_string()),
            None => eprintln!("[{}] {msg}", self.name),
        }
    }
}
