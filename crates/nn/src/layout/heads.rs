//! Head layouts: `heads.{t}.weight`/`.bias` for linear heads, and a two-conv light decoder
//! (`heads.{t}.0` 3x3 conv, ReLU, `heads.{t}.2` 1x1 conv, bilinear upsampling) for dense heads,
//! matching `nn.Sequential(Conv2d, ReLU, Conv2d, Upsample)` in PyTorch.

use super::vit::TRUNC_02;
use super::{Init, ParamInfo, ParamKind};
use crate::spec::{HeadSpec, ModelSpec};

/// Hidden channels of the dense decoder's 3x3 conv.
pub const DENSE_HIDDEN: usize = 64;

/// The tensors of head `t` on backbone `spec`.
///
/// Linear heads use PyTorch's default Linear init on a ResNet (as torchvision's `fc`) and
/// timm's (trunc normal 0.02, zero bias) on a ViT. Dense decoder convs use Kaiming normal
/// (fan out) weights and zero biases on both.
pub fn head_params(spec: &ModelSpec, t: usize, head: &HeadSpec) -> Vec<ParamInfo> {
    let feat = spec.feature_dim();
    let p = format!("heads.{t}");
    match *head {
        HeadSpec::Classifier { classes: o } | HeadSpec::Binary { attributes: o } => {
            let (w_init, b_init) = if spec.is_vit() {
                (TRUNC_02, Init::Const(0.0))
            } else {
                let bound = 1.0 / (feat as f32).sqrt();
                (Init::Uniform { bound }, Init::Uniform { bound })
            };
            vec![
                ParamInfo::new(
                    format!("{p}.weight"),
                    vec![o, feat],
                    ParamKind::Weight,
                    w_init,
                ),
                ParamInfo::new(format!("{p}.bias"), vec![o], ParamKind::Bias, b_init),
            ]
        }
        HeadSpec::Dense { channels } => {
            let conv = |name: &str, o: usize, i: usize, k: usize| {
                vec![
                    ParamInfo::new(
                        format!("{p}.{name}.weight"),
                        vec![o, i, k, k],
                        ParamKind::Weight,
                        Init::KaimingNormalFanOut { fan_out: o * k * k },
                    ),
                    ParamInfo::new(
                        format!("{p}.{name}.bias"),
                        vec![o],
                        ParamKind::Bias,
                        Init::Const(0.0),
                    ),
                ]
            };
            let mut v = conv("0", DENSE_HIDDEN, feat, 3);
            v.extend(conv("2", channels, DENSE_HIDDEN, 1));
            v
        }
    }
}
