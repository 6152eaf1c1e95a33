//! What an aggregator receives each step and what it returns.

use std::borrow::Cow;

use crate::error::{MtoError, Result};
use crate::gram::{SegmentedGram, task_gram};

/// Which inputs a method needs, so the trainer knows whether to run T backward passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Only the per-task losses: one backward pass of the weighted loss.
    Losses,
    /// Per-task gradients of the shared parameters (T backward passes, T x P floats held).
    SharedGradients,
    /// Per-task gradients at the shared representation (T cheap backward passes through the
    /// heads, T x R floats held), then one backward of the combined representation gradient.
    RepresentationGradients,
}

/// Per-task gradients: a T x P row-major `f32` matrix cut into layer segments.
///
/// Built with [`TaskGradients::new`] / [`TaskGradients::whole`] it holds the values (host
/// memory). Built with [`TaskGradients::shape_only`] / [`TaskGradients::shape_only_whole`] it
/// holds only the shape and segments, for gradients that live elsewhere (a GPU): the caller
/// passes their Gram matrices through [`AggregateInput::with_gram`], every method that only
/// needs the Gram returns its weights with `direction: None`, and the caller combines the
/// gradients where they are. Methods that need the values
/// ([`crate::Aggregator::needs_gradient_values`]) refuse such input with an error.
#[derive(Clone, Debug)]
pub struct TaskGradients<'a> {
    /// The T x P values; `None` for shape-only gradients.
    data: Option<&'a [f32]>,
    tasks: usize,
    params: usize,
    segment_ends: Cow<'a, [usize]>,
}

impl<'a> TaskGradients<'a> {
    /// Wraps `data` (T x P row-major) with layer segments given by their exclusive ends
    /// (strictly increasing, last == P).
    pub fn new(
        data: &'a [f32],
        tasks: usize,
        params: usize,
        segment_ends: &'a [usize],
    ) -> Result<Self> {
        Self::build(Some(data), tasks, params, Cow::Borrowed(segment_ends))
    }

    /// Wraps `data` (T x P row-major) as one segment (a whole backbone or a representation).
    pub fn whole(data: &'a [f32], tasks: usize, params: usize) -> Result<Self> {
        Self::build(Some(data), tasks, params, Cow::Owned(vec![params]))
    }

    /// The shape of T x P gradients held elsewhere (e.g. on a GPU), without their values,
    /// with layer segments given by their exclusive ends (strictly increasing, last == P).
    pub fn shape_only(tasks: usize, params: usize, segment_ends: &'a [usize]) -> Result<Self> {
        Self::build(None, tasks, params, Cow::Borrowed(segment_ends))
    }

    /// [`TaskGradients::shape_only`] with one segment (a whole backbone or a representation).
    pub fn shape_only_whole(tasks: usize, params: usize) -> Result<Self> {
        Self::build(None, tasks, params, Cow::Owned(vec![params]))
    }

    fn build(
        data: Option<&'a [f32]>,
        tasks: usize,
        params: usize,
        segment_ends: Cow<'a, [usize]>,
    ) -> Result<Self> {
        const M: &str = "task_gradients";
        if tasks == 0 || params == 0 {
            return Err(MtoError::invalid(
                M,
                format!("tasks = {tasks}, params = {params}: both must be at least 1"),
            ));
        }
        let expected = tasks.checked_mul(params).ok_or_else(|| {
            MtoError::invalid(
                M,
                format!("tasks {tasks} x params {params} overflows usize"),
            )
        })?;
        if let Some(data) = data
            && data.len() != expected
        {
            return Err(MtoError::invalid(
                M,
                format!(
                    "gradient buffer has {} floats, expected tasks {tasks} x params {params} = {expected}",
                    data.len()
                ),
            ));
        }
        let mut prev = 0usize;
        for (l, &e) in segment_ends.iter().enumerate() {
            if e <= prev {
                return Err(MtoError::invalid(
                    M,
                    format!("segment_ends[{l}] = {e} is not greater than the previous end {prev}"),
                ));
            }
            prev = e;
        }
        if prev != params {
            return Err(MtoError::invalid(
                M,
                format!("last segment end is {prev}, expected params = {params}"),
            ));
        }
        Ok(Self {
            data,
            tasks,
            params,
            segment_ends,
        })
    }

    /// Whether the values are here (false for [`TaskGradients::shape_only`] gradients).
    pub fn has_values(&self) -> bool {
        self.data.is_some()
    }

    /// The whole T x P buffer; an error for shape-only gradients.
    pub fn data(&self) -> Result<&'a [f32]> {
        self.data.ok_or_else(|| {
            MtoError::invalid(
                "task_gradients",
                "the gradients were given as a shape only (their values live elsewhere, e.g. on a GPU); this operation needs the values",
            )
        })
    }

    /// Number of tasks T.
    pub fn tasks(&self) -> usize {
        self.tasks
    }

    /// Number of parameters (or representation elements) P.
    pub fn params(&self) -> usize {
        self.params
    }

    /// Exclusive ends of the segments.
    pub fn segment_ends(&self) -> &[usize] {
        &self.segment_ends
    }

    /// Task `t`'s gradient (length P); an error for shape-only gradients or `t >= T`.
    pub fn row(&self, t: usize) -> Result<&'a [f32]> {
        if t >= self.tasks {
            return Err(MtoError::invalid(
                "task_gradients",
                format!("row {t} requested, the gradients have {} tasks", self.tasks),
            ));
        }
        Ok(&self.data()?[t * self.params..(t + 1) * self.params])
    }

    /// Number of elements in each segment.
    pub fn segment_sizes(&self) -> Vec<usize> {
        let mut prev = 0;
        self.segment_ends
            .iter()
            .map(|&e| {
                let s = e - prev;
                prev = e;
                s
            })
            .collect()
    }
}

/// One step's input to an [`crate::Aggregator`].
#[derive(Clone, Debug)]
pub struct AggregateInput<'a> {
    /// Per-task losses of this step (length T), always required.
    pub losses: &'a [f64],
    /// Per-task gradients (shared parameters or representation, as the method requires).
    pub grads: Option<TaskGradients<'a>>,
    /// The Gram matrices of `grads` if the caller already computed them (e.g. for conflict
    /// metrics, or on a GPU); otherwise the method computes them through [`task_gram`].
    /// Required with shape-only gradients.
    pub gram: Option<&'a SegmentedGram>,
    /// Current epoch (0-based); used by DWA, which works on epoch-mean losses.
    pub epoch: usize,
}

impl<'a> AggregateInput<'a> {
    /// Input with losses only (epoch 0).
    pub fn from_losses(losses: &'a [f64]) -> Self {
        Self {
            losses,
            grads: None,
            gram: None,
            epoch: 0,
        }
    }

    /// Adds per-task gradients.
    pub fn with_grads(mut self, grads: TaskGradients<'a>) -> Self {
        self.grads = Some(grads);
        self
    }

    /// Adds precomputed Gram matrices of the gradients.
    pub fn with_gram(mut self, gram: &'a SegmentedGram) -> Self {
        self.gram = Some(gram);
        self
    }

    /// Sets the epoch.
    pub fn with_epoch(mut self, epoch: usize) -> Self {
        self.epoch = epoch;
        self
    }

    /// Checks the losses (finite, length `tasks` when given) and returns T.
    pub(crate) fn check_losses(&self, method: &'static str, tasks: Option<usize>) -> Result<usize> {
        let t = self.losses.len();
        if t == 0 {
            return Err(MtoError::invalid(
                method,
                "no task losses given, expected T >= 1",
            ));
        }
        if let Some(expected) = tasks
            && expected != t
        {
            return Err(MtoError::invalid(
                method,
                format!("{t} task losses given, the method was built for {expected} tasks"),
            ));
        }
        if let Some(g) = &self.grads
            && g.tasks() != t
        {
            return Err(MtoError::invalid(
                method,
                format!("{t} task losses but gradients of {} tasks", g.tasks()),
            ));
        }
        if let Some((i, l)) = self.losses.iter().enumerate().find(|(_, l)| !l.is_finite()) {
            return Err(MtoError::invalid(
                method,
                format!("loss of task {i} is {l}, expected a finite value"),
            ));
        }
        Ok(t)
    }

    /// The gradients, or an error saying the method needs them.
    pub(crate) fn require_grads(&self, method: &'static str) -> Result<&TaskGradients<'a>> {
        self.grads.as_ref().ok_or_else(|| {
            MtoError::invalid(
                method,
                "this method needs per-task gradients, none were given",
            )
        })
    }

    /// The Gram matrices of the gradients: the precomputed ones (checked) or fresh ones
    /// (which needs the values: shape-only gradients must come with their Gram).
    pub(crate) fn gram(&self, method: &'static str) -> Result<Cow<'a, SegmentedGram>> {
        let g = self.require_grads(method)?;
        match self.gram {
            Some(k) => {
                let (t, l) = (g.tasks(), g.segment_ends().len());
                let tt = t * t;
                if k.t != t
                    || k.segments.len() != l
                    || k.total.len() != tt
                    || k.segments.iter().any(|s| s.len() != tt)
                {
                    return Err(MtoError::invalid(
                        method,
                        format!(
                            "precomputed Gram is for {} tasks and {} segments, gradients have {t} tasks and {l} segments",
                            k.t,
                            k.segments.len(),
                        ),
                    ));
                }
                // As task_gram: a non-finite gradient shows on the diagonal.
                if let Some(i) = (0..t).find(|&i| !k.total[i * t + i].is_finite()) {
                    return Err(MtoError::invalid(
                        method,
                        format!("gradient of task {i} holds a NaN or an infinity"),
                    ));
                }
                Ok(Cow::Borrowed(k))
            }
            None if g.has_values() => Ok(Cow::Owned(task_gram(g)?)),
            None => Err(MtoError::invalid(
                method,
                "the gradients were given as a shape only and without their Gram: pass the Gram through AggregateInput::with_gram",
            )),
        }
    }

    /// `sum_t w_t g_t` when the gradients' values are here; `None` when no gradients or only
    /// their shape were given (the caller combines them where they live).
    pub(crate) fn direction(&self, w: &[f64]) -> Result<Option<Vec<f32>>> {
        match &self.grads {
            Some(g) if g.has_values() => Ok(Some(crate::combine::combine(g, w)?)),
            _ => Ok(None),
        }
    }

    /// [`AggregateInput::direction`] with one weight vector per segment.
    pub(crate) fn direction_segments(&self, w: &[Vec<f64>]) -> Result<Option<Vec<f32>>> {
        match &self.grads {
            Some(g) if g.has_values() => Ok(Some(crate::combine::combine_segments(g, w)?)),
            _ => Ok(None),
        }
    }
}

/// What an aggregator returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregation {
    /// Effective weight of each task's raw gradient (or loss): the direction equals
    /// `sum_t weights[t] * g_t` (per segment for per-layer methods, see `segment_weights`).
    pub weights: Vec<f64>,
    /// The combined gradient (length P of the input gradients: shared parameters or the
    /// representation). `None` when no gradients were given (loss-based methods): the trainer
    /// then backpropagates `sum_t weights[t] * L_t`; `None` as well for shape-only gradients
    /// ([`TaskGradients::shape_only`]): the caller combines them with `weights` (or
    /// `segment_weights`) where they live.
    pub direction: Option<Vec<f32>>,
    /// Per-segment weights (L x T) for methods that treat layers separately (GradVac per
    /// layer); `weights` is then their parameter-count-weighted mean.
    pub segment_weights: Option<Vec<Vec<f64>>>,
}
