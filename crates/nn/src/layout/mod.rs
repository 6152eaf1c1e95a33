//! Parameter layouts: the ordered list of every tensor a model owns (name, shape, kind and
//! initialisation rule), following the torchvision / timm names so checkpoints load in PyTorch.

mod heads;
pub mod resnet;
pub mod vit;

use crate::spec::{Family, HeadsSpec, ModelSpec};

pub use heads::{DENSE_HIDDEN, head_params};
pub use resnet::resnet_params;
pub use vit::vit_params;

/// What a tensor is, which decides whether it is trained and whether it gets weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Conv or linear weight matrix (weight decay applies).
    Weight,
    /// Conv or linear bias.
    Bias,
    /// Affine weight or bias of a BatchNorm or LayerNorm.
    Norm,
    /// Learned embedding such as `cls_token` or `pos_embed`.
    Embedding,
    /// BatchNorm running mean (a buffer, not trained).
    RunningMean,
    /// BatchNorm running variance (a buffer, not trained).
    RunningVar,
}

impl ParamKind {
    /// True for tensors updated by the optimizer (everything but BN running statistics).
    pub fn trainable(self) -> bool {
        !matches!(self, ParamKind::RunningMean | ParamKind::RunningVar)
    }

    /// True when weight decay applies even with "no decay on norms, biases and embeddings"
    /// (timm's rule: only matrices and conv kernels decay).
    pub fn decays_when_filtered(self) -> bool {
        matches!(self, ParamKind::Weight)
    }
}

/// How a tensor is initialised (the PyTorch / timm defaults for each layer type).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with std `sqrt(2 / fan_out)` (torchvision ResNet convs,
    /// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`).
    KaimingNormalFanOut {
        /// `c_out * kh * kw`.
        fan_out: usize,
    },
    /// Uniform in `[-bound, bound]` (PyTorch's default Linear/Conv init gives
    /// `bound = 1/sqrt(fan_in)` for both weight and bias).
    Uniform {
        /// Half-width of the interval.
        bound: f32,
    },
    /// Normal(0, std) truncated to the absolute interval `[lo, hi]` (timm `trunc_normal_`).
    TruncNormal {
        /// Standard deviation before truncation.
        std: f32,
        /// Lower cut.
        lo: f32,
        /// Upper cut.
        hi: f32,
    },
    /// Normal(0, std).
    Normal {
        /// Standard deviation.
        std: f32,
    },
    /// Every element set to this value.
    Const(f32),
}

/// One tensor of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// Checkpoint name, e.g. `backbone.layer1.0.conv1.weight`.
    pub name: String,
    /// Shape (PyTorch order: conv `[c_out, c_in, kh, kw]`, linear `[out, in]`).
    pub shape: Vec<usize>,
    /// What the tensor is.
    pub kind: ParamKind,
    /// Initialisation rule.
    pub init: Init,
}

impl ParamInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub(crate) fn new(name: String, shape: Vec<usize>, kind: ParamKind, init: Init) -> Self {
        ParamInfo {
            name,
            shape,
            kind,
            init,
        }
    }
}

/// Options that change initial values but not shapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Zero-init the last BN (`bn3.weight`) of every bottleneck, so each residual block starts
    /// as the identity (torchvision's `zero_init_residual`).
    pub zero_init_residual: bool,
}

/// The full ordered layout of a model: backbone tensors, then each head's.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    /// Every tensor, in checkpoint order.
    pub params: Vec<ParamInfo>,
}

impl Layout {
    /// Layout of backbone `spec` with `heads`.
    pub fn new(spec: &ModelSpec, heads: &HeadsSpec, opts: InitOptions) -> Self {
        let mut params = match spec.family {
            Family::ResNet { .. } => resnet_params(spec, opts),
            Family::Vit { .. } => vit_params(spec),
        };
        for (t, h) in heads.0.iter().enumerate() {
            params.extend(head_params(spec, t, h));
        }
        Layout { params }
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&ParamInfo> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Trainable elements of the backbone (BN running statistics excluded), the number the
    /// architecture document quotes.
    pub fn backbone_param_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.kind.trainable() && p.name.starts_with("backbone."))
            .map(ParamInfo::numel)
            .sum()
    }

    /// Trainable elements of the whole model.
    pub fn trainable_param_count(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.kind.trainable())
            .map(ParamInfo::numel)
            .sum()
    }

    /// The trainable tensors only, in order.
    pub fn trainable(&self) -> impl Iterator<Item = &ParamInfo> {
        self.params.iter().filter(|p| p.kind.trainable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(spec: &str) -> usize {
        let spec = ModelSpec::parse(spec).unwrap();
        Layout::new(
            &spec,
            &HeadsSpec::parse("10").unwrap(),
            InitOptions::default(),
        )
        .backbone_param_count()
    }

    #[test]
    fn backbone_counts_match_the_architecture_exactly() {
        assert_eq!(count("resnet26:w0.25"), 877_264);
        assert_eq!(count("resnet26:w0.5"), 3_492_768);
        assert_eq!(count("resnet26:w1.0"), 13_938_496);
        assert_eq!(count("resnet50:w0.25"), 1_479_056);
        assert_eq!(count("resnet50:w1"), 23_500_352);
        assert_eq!(count("resnet101:w1"), 42_492_480);
        assert_eq!(count("vit-ti:p4"), 5_360_832);
        assert_eq!(count("vit-s:p4"), 21_338_496);
    }

    #[test]
    fn known_timm_and_torchvision_counts() {
        // timm vit_base_patch16_224 without its head: 86,567,656 - (768*1000 + 1000).
        assert_eq!(count("vit-b:p16:r224"), 86_567_656 - 769_000);
        // torchvision resnet50 (ImageNet stem 7x7, 9,408 weights) without fc: 23,508,032;
        // the CIFAR stem has a 3x3 conv (1,728 weights) instead.
        assert_eq!(count("resnet50:w1"), 23_508_032 - 9_408 + 1_728);
    }

    #[test]
    fn names_and_shapes_follow_torchvision_and_timm() {
        let spec = ModelSpec::parse("resnet26:w0.25").unwrap();
        let l = Layout::new(
            &spec,
            &HeadsSpec::parse("10,a40,d3").unwrap(),
            InitOptions::default(),
        );
        let shape = |n: &str| {
            l.get(n)
                .unwrap_or_else(|| panic!("missing {n}"))
                .shape
                .clone()
        };
        assert_eq!(shape("backbone.conv1.weight"), vec![16, 3, 3, 3]);
        assert_eq!(shape("backbone.bn1.running_var"), vec![16]);
        assert_eq!(shape("backbone.layer1.0.conv1.weight"), vec![16, 16, 1, 1]);
        assert_eq!(shape("backbone.layer1.0.conv3.weight"), vec![64, 16, 1, 1]);
        assert_eq!(
            shape("backbone.layer1.0.downsample.0.weight"),
            vec![64, 16, 1, 1]
        );
        assert!(l.get("backbone.layer1.1.downsample.0.weight").is_none());
        assert_eq!(shape("backbone.layer2.0.conv2.weight"), vec![32, 32, 3, 3]);
        assert_eq!(shape("backbone.layer4.1.bn3.running_mean"), vec![512]);
        assert_eq!(shape("heads.0.weight"), vec![10, 512]);
        assert_eq!(shape("heads.1.bias"), vec![40]);
        assert_eq!(shape("heads.2.0.weight"), vec![DENSE_HIDDEN, 512, 3, 3]);
        assert_eq!(shape("heads.2.2.weight"), vec![3, DENSE_HIDDEN, 1, 1]);
        assert_eq!(l.params[0].name, "backbone.conv1.weight");
        assert_eq!(l.params.last().unwrap().name, "heads.2.2.bias");
        // Names are unique.
        let mut names: Vec<_> = l.params.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), l.params.len());

        let spec = ModelSpec::parse("vit-ti:p4:d2").unwrap();
        let l = Layout::new(&spec, &HeadsSpec::parse("10").unwrap(), Default::default());
        let shape = |n: &str| {
            l.get(n)
                .unwrap_or_else(|| panic!("missing {n}"))
                .shape
                .clone()
        };
        assert_eq!(shape("backbone.cls_token"), vec![1, 1, 192]);
        assert_eq!(shape("backbone.pos_embed"), vec![1, 65, 192]);
        assert_eq!(
            shape("backbone.patch_embed.proj.weight"),
            vec![192, 3, 4, 4]
        );
        assert_eq!(shape("backbone.blocks.1.attn.qkv.weight"), vec![576, 192]);
        assert_eq!(shape("backbone.blocks.1.attn.proj.bias"), vec![192]);
        assert_eq!(shape("backbone.blocks.0.mlp.fc1.weight"), vec![768, 192]);
        assert_eq!(shape("backbone.blocks.0.mlp.fc2.weight"), vec![192, 768]);
        assert_eq!(shape("backbone.norm.weight"), vec![192]);
        assert!(l.get("backbone.blocks.2.norm1.weight").is_none());
        assert_eq!(shape("heads.0.weight"), vec![10, 192]);
    }

    #[test]
    fn kinds_and_inits() {
        let spec = ModelSpec::parse("resnet26:w0.25").unwrap();
        let heads = HeadsSpec::parse("10").unwrap();
        let l = Layout::new(&spec, &heads, InitOptions::default());
        let p = l.get("backbone.layer1.0.conv2.weight").unwrap();
        assert_eq!(p.kind, ParamKind::Weight);
        assert_eq!(p.init, Init::KaimingNormalFanOut { fan_out: 16 * 9 });
        assert_eq!(
            l.get("backbone.layer1.0.bn3.weight").unwrap().init,
            Init::Const(1.0)
        );
        let z = Layout::new(
            &spec,
            &heads,
            InitOptions {
                zero_init_residual: true,
            },
        );
        assert_eq!(
            z.get("backbone.layer1.0.bn3.weight").unwrap().init,
            Init::Const(0.0)
        );
        assert_eq!(
            z.get("backbone.layer1.0.bn2.weight").unwrap().init,
            Init::Const(1.0)
        );
        assert_eq!(
            l.get("backbone.bn1.running_var").unwrap().kind,
            ParamKind::RunningVar
        );
        assert_eq!(
            l.get("heads.0.weight").unwrap().init,
            Init::Uniform {
                bound: 1.0 / (512f32).sqrt()
            }
        );
        let spec = ModelSpec::parse("vit-ti:p4:d1").unwrap();
        let l = Layout::new(&spec, &heads, InitOptions::default());
        assert_eq!(
            l.get("backbone.pos_embed").unwrap().kind,
            ParamKind::Embedding
        );
        assert_eq!(
            l.get("backbone.blocks.0.attn.qkv.weight").unwrap().init,
            Init::TruncNormal {
                std: 0.02,
                lo: -2.0,
                hi: 2.0
            }
        );
        assert_eq!(
            l.get("backbone.blocks.0.norm1.bias").unwrap().kind,
            ParamKind::Norm
        );
    }
}
