//! Head forward passes: linear (classifier / binary attributes) on the pooled features, and
//! the light dense decoder on the feature map.

use scalarize_autograd::{ParamStore, Tensor};

use crate::error::{NnError, Result};
use crate::spec::HeadSpec;

/// Runs head `t` on the rows `features` `[n, F]` (linear heads) or `map` `[n, F, h, w]`
/// (dense heads, upsampled to `out_hw`).
pub fn head_forward(
    store: &ParamStore,
    t: usize,
    head: &HeadSpec,
    features: &Tensor,
    map: Option<&Tensor>,
    out_hw: (usize, usize),
) -> Result<Tensor> {
    let p = |name: &str| -> Result<Tensor> { Ok(store.get(&format!("heads.{t}.{name}"))?.clone()) };
    match head {
        HeadSpec::Classifier { .. } | HeadSpec::Binary { .. } => {
            Ok(features.linear(&p("weight")?, Some(&p("bias")?))?)
        }
        HeadSpec::Dense { .. } => {
            let map = map.ok_or_else(|| {
                NnError::invalid(
                    format!("head {t}"),
                    "a dense head needs the backbone's feature map",
                )
            })?;
            let h = map
                .conv2d(&p("0.weight")?, Some(&p("0.bias")?), 1, 1)?
                .relu()?
                .conv2d(&p("2.weight")?, Some(&p("2.bias")?), 1, 0)?;
            Ok(h.upsample_bilinear(out_hw.0, out_hw.1)?)
        }
    }
}
