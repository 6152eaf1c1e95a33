//! MGDA-UB: MGDA on the gradients at the shared representation.

use super::mgda::{Mgda, MgdaNormalization};

/// MGDA-UB (Sener & Koltun, NeurIPS 2018, section 3.3): the min-norm weights are computed from
/// the per-task gradients at the shared representation Z (an upper bound of the problem on
/// the shared parameters), so only one backward pass through the backbone is needed: the
/// trainer backpropagates the returned representation direction `sum_t w_t dL_t/dZ` (or,
/// equivalently, `sum_t w_t L_t`). Weights sum to 1 without normalisation; the paper's code
/// uses `loss+` normalisation ([`MgdaNormalization::LossL2`]), offered as an option.
pub struct MgdaUb;

impl MgdaUb {
    /// MGDA-UB without gradient normalisation (LibMTL's default).
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> Mgda {
        Mgda::at_representation(MgdaNormalization::None)
    }

    /// MGDA-UB with a given normalisation.
    pub fn with_normalization(normalization: MgdaNormalization) -> Mgda {
        Mgda::at_representation(normalization)
    }
}
