//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use scalarize_pbt::{BoxError, Hyperparams, Interval, Trainable};

/// How a [`Faulty`] member misbehaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// `train` returns an error.
    Error,
    /// `evaluate` returns NaN.
    NaN,
    /// `train` panics.
    Panic,
}

/// Wraps a trainable; member `failing_member` misbehaves once, in the first interval it
/// starts at `at_step` (`fired` records that it did, across re-created instances).
pub struct Faulty<T> {
    pub inner: T,
    pub member: usize,
    pub failing_member: usize,
    pub at_step: u64,
    pub fault: Fault,
    pending_nan: bool,
    fired: Arc<AtomicBool>,
}

impl<T> Faulty<T> {
    pub fn new(
        inner: T,
        member: usize,
        failing_member: usize,
        at_step: u64,
        fault: Fault,
        fired: &Arc<AtomicBool>,
    ) -> Self {
        Self {
            inner,
            member,
            failing_member,
            at_step,
            fault,
            pending_nan: false,
            fired: fired.clone(),
        }
    }
}

impl<T: Trainable> Trainable for Faulty<T> {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        self.inner.set_hyperparameters(hp)
    }
    fn hyperparameters(&self) -> Hyperparams {
        self.inner.hyperparameters()
    }
    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        if interval.member == self.failing_member
            && interval.start_step == self.at_step
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            match self.fault {
                Fault::Error => return Err("injected failure".into()),
                Fault::Panic => panic!("injected panic"),
                Fault::NaN => self.pending_nan = true,
            }
        }
        self.inner.train(interval)
    }
    fn evaluate(&mut self) -> Result<f64, BoxError> {
        if std::mem::take(&mut self.pending_nan) {
            return Ok(f64::NAN);
        }
        self.inner.evaluate()
    }
    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        self.inner.save(path)
    }
    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        self.inner.load(path)
    }
}

/// Wraps a trainable and sleeps per unit trained (to give a killer something to interrupt).
pub struct Slow<T> {
    pub inner: T,
    pub per_unit: Duration,
}

impl<T: Trainable> Trainable for Slow<T> {
    fn set_hyperparameters(&mut self, hp: &Hyperparams) -> Result<(), BoxError> {
        self.inner.set_hyperparameters(hp)
    }
    fn hyperparameters(&self) -> Hyperparams {
        self.inner.hyperparameters()
    }
    fn train(&mut self, interval: &Interval) -> Result<(), BoxError> {
        std::thread::sleep(self.per_unit * interval.units as u32);
        self.inner.train(interval)
    }
    fn evaluate(&mut self) -> Result<f64, BoxError> {
        self.inner.evaluate()
    }
    fn save(&mut self, path: &Path) -> Result<(), BoxError> {
        self.inner.save(path)
    }
    fn load(&mut self, path: &Path) -> Result<(), BoxError> {
        self.inner.load(path)
    }
}
