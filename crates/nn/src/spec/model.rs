//! Model specs: a compact string naming a backbone, e.g. `resnet26:w0.25` or `vit-ti:p4:d6`.
//!
//! Grammar: `<family>[:<option>]*`, options separated by `:`, each a letter and a number.
//!
//! | family                                  | options (default)                                   |
//! |-----------------------------------------|-----------------------------------------------------|
//! | `resnet26` `resnet38` `resnet50` `resnet101` `resnet152` | `w<width multiplier>` (1), `r<input resolution>` (32), `c<input channels>` (3) |
//! | `vit-ti` `vit-s` `vit-b` `vit-l`        | `p<patch>` (16), `d<depth>` (12; 24 for vit-l), `r<resolution>` (32), `c<channels>` (3) |
//!
//! The resolution fixes the ViT position-embedding length (it must be divisible by the patch);
//! for a ResNet it is only the nominal input size (any size divisible by 8 works).

use std::fmt;
use std::str::FromStr;

use crate::error::{NnError, Result};

/// ViT sizes of the timm family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VitSize {
    /// ViT-Ti: width 192, 3 heads.
    Tiny,
    /// ViT-S: width 384, 6 heads.
    Small,
    /// ViT-B: width 768, 12 heads.
    Base,
    /// ViT-L: width 1024, 16 heads, depth 24.
    Large,
}

impl VitSize {
    /// Embedding width.
    pub fn dim(self) -> usize {
        match self {
            VitSize::Tiny => 192,
            VitSize::Small => 384,
            VitSize::Base => 768,
            VitSize::Large => 1024,
        }
    }

    /// Number of attention heads.
    pub fn num_heads(self) -> usize {
        match self {
            VitSize::Tiny => 3,
            VitSize::Small => 6,
            VitSize::Base => 12,
            VitSize::Large => 16,
        }
    }

    /// Default depth (number of blocks).
    pub fn default_depth(self) -> usize {
        match self {
            VitSize::Large => 24,
            _ => 12,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            VitSize::Tiny => "ti",
            VitSize::Small => "s",
            VitSize::Base => "b",
            VitSize::Large => "l",
        }
    }
}

/// The backbone family and its shape-defining options.
#[derive(Clone, Debug, PartialEq)]
pub enum Family {
    /// ResNet with the CIFAR stem and bottleneck blocks (expansion 4).
    ResNet {
        /// 26, 38, 50, 101 or 152.
        depth: usize,
        /// Width multiplier: base width is `int(64 * width)`.
        width: f64,
    },
    /// Vision transformer in the timm layout.
    Vit {
        /// Ti, S, B or L.
        size: VitSize,
        /// Patch size (square).
        patch: usize,
        /// Number of transformer blocks.
        depth: usize,
    },
}

/// A parsed model spec; `Display` gives the canonical string (which `FromStr` parses back).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    /// Backbone family and shape options.
    pub family: Family,
    /// Input resolution (square images).
    pub resolution: usize,
    /// Input channels.
    pub in_channels: usize,
}

/// Blocks per stage for each supported ResNet depth.
pub const RESNET_DEPTHS: [(usize, [usize; 4]); 5] = [
    (26, [2, 2, 2, 2]),
    (38, [3, 3, 3, 3]),
    (50, [3, 4, 6, 3]),
    (101, [3, 4, 23, 3]),
    (152, [3, 8, 36, 3]),
];

impl ModelSpec {
    /// Parses a spec string; the error names the bad part and what is allowed.
    pub fn parse(spec: &str) -> Result<Self> {
        let err = |msg: String| NnError::ModelSpec {
            spec: spec.to_string(),
            msg,
        };
        let mut parts = spec.trim().split(':');
        let family_str = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let mut family = if let Some(depth_str) = family_str.strip_prefix("resnet") {
            let depth: usize = depth_str.parse().map_err(|_| {
                err(format!(
                    "family `{family_str}`: expected resnet followed by a depth, one of {}",
                    resnet_depth_list()
                ))
            })?;
            if !RESNET_DEPTHS.iter().any(|(d, _)| *d == depth) {
                return Err(err(format!(
                    "ResNet depth {depth} is not supported; allowed depths: {}",
                    resnet_depth_list()
                )));
            }
            Family::ResNet { depth, width: 1.0 }
        } else if let Some(size_str) = family_str.strip_prefix("vit-") {
            let size = match size_str {
                "ti" | "tiny" => VitSize::Tiny,
                "s" | "small" => VitSize::Small,
                "b" | "base" => VitSize::Base,
                "l" | "large" => VitSize::Large,
                other => {
                    return Err(err(format!(
                        "ViT size `{other}` is unknown; allowed: vit-ti, vit-s, vit-b, vit-l"
                    )));
                }
            };
            Family::Vit {
                size,
                patch: 16,
                depth: size.default_depth(),
            }
        } else {
            return Err(err(format!(
                "family `{family_str}` is unknown; allowed: resnet{{{}}} (e.g. resnet26:w0.25) or \
                 vit-{{ti,s,b,l}} (e.g. vit-ti:p4)",
                RESNET_DEPTHS
                    .iter()
                    .map(|(d, _)| d.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )));
        };
        let mut resolution = 32usize;
        let mut in_channels = 3usize;
        let mut seen = String::new();
        for opt in parts {
            let opt = opt.trim();
            let Some(key) = opt.chars().next() else {
                return Err(err(
                    "empty option (two `:` in a row or a trailing `:`)".into()
                ));
            };
            let key = key.to_ascii_lowercase();
            if seen.contains(key) {
                return Err(err(format!("option `{key}` given twice")));
            }
            seen.push(key);
            let value = &opt[key.len_utf8()..];
            let allowed = match family {
                Family::ResNet { .. } => "w<width> (e.g. w0.25), r<resolution>, c<channels>",
                Family::Vit { .. } => "p<patch>, d<depth>, r<resolution>, c<channels>",
            };
            let positive_int = |what: &str| -> Result<usize> {
                match value.parse::<usize>() {
                    Ok(v) if v > 0 => Ok(v),
                    _ => Err(err(format!(
                        "option `{opt}`: {what} must be a positive integer, got `{value}`"
                    ))),
                }
            };
            match (&mut family, key) {
                (Family::ResNet { width, .. }, 'w') => {
                    let w: f64 = value.parse().map_err(|_| {
                        err(format!(
                            "option `{opt}`: width must be a positive number, got `{value}`"
                        ))
                    })?;
                    if !(w.is_finite() && w > 0.0 && (64.0 * w) as usize >= 1) {
                        return Err(err(format!(
                            "option `{opt}`: width must give int(64*w) >= 1, got {w}"
                        )));
                    }
                    *width = w;
                }
                (Family::Vit { patch, .. }, 'p') => *patch = positive_int("patch size")?,
                (Family::Vit { depth, .. }, 'd') => *depth = positive_int("depth")?,
                (_, 'r') => resolution = positive_int("resolution")?,
                (_, 'c') => in_channels = positive_int("input channels")?,
                _ => {
                    return Err(err(format!(
                        "option `{opt}` is unknown for this family; allowed: {allowed}"
                    )));
                }
            }
        }
        match family {
            Family::Vit { patch, .. } if !resolution.is_multiple_of(patch) => {
                return Err(err(format!(
                    "resolution {resolution} is not divisible by the patch size {patch}"
                )));
            }
            Family::ResNet { .. } if !resolution.is_multiple_of(8) => {
                return Err(err(format!(
                    "resolution {resolution} is not divisible by 8 (the ResNet's total stride)"
                )));
            }
            _ => {}
        }
        Ok(ModelSpec {
            family,
            resolution,
            in_channels,
        })
    }

    /// Blocks per stage of a ResNet spec, `None` for a ViT.
    pub fn resnet_blocks(&self) -> Option<[usize; 4]> {
        match self.family {
            Family::ResNet { depth, .. } => RESNET_DEPTHS
                .iter()
                .find(|(d, _)| *d == depth)
                .map(|(_, b)| *b),
            Family::Vit { .. } => None,
        }
    }

    /// Width of the backbone's output feature vector (what a classifier head sees).
    pub fn feature_dim(&self) -> usize {
        match self.family {
            Family::ResNet { width, .. } => resnet_base_width(width) * 8 * 4,
            Family::Vit { size, .. } => size.dim(),
        }
    }

    /// Total stride of the backbone's spatial feature map (8 for a ResNet, the patch for a ViT).
    pub fn feature_stride(&self) -> usize {
        match self.family {
            Family::ResNet { .. } => 8,
            Family::Vit { patch, .. } => patch,
        }
    }

    /// True for the ViT family.
    pub fn is_vit(&self) -> bool {
        matches!(self.family, Family::Vit { .. })
    }
}

/// Base width `int(64 * w)` of a ResNet with width multiplier `w` (as torchvision's wide
/// variants compute it).
pub fn resnet_base_width(width: f64) -> usize {
    (64.0 * width) as usize
}

fn resnet_depth_list() -> String {
    RESNET_DEPTHS
        .iter()
        .map(|(d, _)| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for ModelSpec {
    type Err = NnError;
    fn from_str(s: &str) -> Result<Self> {
        ModelSpec::parse(s)
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            Family::ResNet { depth, width } => write!(f, "resnet{depth}:w{width}")?,
            Family::Vit { size, patch, depth } => {
                write!(f, "vit-{}:p{patch}", size.tag())?;
                if depth != size.default_depth() {
                    write!(f, ":d{depth}")?;
                }
            }
        }
        if self.resolution != 32 {
            write!(f, ":r{}", self.resolution)?;
        }
        if self.in_channels != 3 {
            write!(f, ":c{}", self.in_channels)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_examples() {
        let s = ModelSpec::parse("resnet26:w0.25").unwrap();
        assert_eq!(
            s.family,
            Family::ResNet {
                depth: 26,
                width: 0.25
            }
        );
        assert_eq!(s.resolution, 32);
        assert_eq!(s.feature_dim(), 512);
        assert_eq!(s.resnet_blocks(), Some([2, 2, 2, 2]));
        let s = ModelSpec::parse("resnet101:w1").unwrap();
        assert_eq!(s.resnet_blocks(), Some([3, 4, 23, 3]));
        assert_eq!(s.feature_dim(), 2048);
        let s = ModelSpec::parse("vit-ti:p4:d6").unwrap();
        assert_eq!(
            s.family,
            Family::Vit {
                size: VitSize::Tiny,
                patch: 4,
                depth: 6
            }
        );
        let s = ModelSpec::parse("vit-b:p16:r224").unwrap();
        assert_eq!(s.resolution, 224);
        assert_eq!(s.feature_dim(), 768);
        let s = ModelSpec::parse("vit-s:p4").unwrap();
        assert_eq!(
            s.family,
            Family::Vit {
                size: VitSize::Small,
                patch: 4,
                depth: 12
            }
        );
        assert_eq!(ModelSpec::parse("resnet50:c1:r64").unwrap().in_channels, 1);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "resnet26:w0.25",
            "resnet50:w1",
            "resnet101:w0.5:r64:c1",
            "vit-ti:p4",
            "vit-s:p4:d6",
            "vit-b:p16:r224",
            "vit-l:p14:d2:r28",
        ] {
            let spec = ModelSpec::parse(s).unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(ModelSpec::parse(&spec.to_string()).unwrap(), spec);
        }
        // Defaults are dropped from the canonical form.
        assert_eq!(
            ModelSpec::parse("vit-ti:p4:d12:r32").unwrap().to_string(),
            "vit-ti:p4"
        );
    }

    fn err_of(s: &str) -> String {
        ModelSpec::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn bad_specs_name_the_bad_part() {
        let e = err_of("resnet27:w1");
        assert!(
            e.contains("depth 27") && e.contains("26, 38, 50, 101, 152"),
            "{e}"
        );
        let e = err_of("vgg16");
        assert!(e.contains("`vgg16`") && e.contains("vit-"), "{e}");
        let e = err_of("vit-xl:p4");
        assert!(e.contains("`xl`") && e.contains("vit-ti"), "{e}");
        let e = err_of("resnet26:p4");
        assert!(e.contains("`p4`") && e.contains("w<width>"), "{e}");
        let e = err_of("vit-ti:w2");
        assert!(e.contains("`w2`") && e.contains("p<patch>"), "{e}");
        let e = err_of("vit-ti:pfour");
        assert!(
            e.contains("`pfour`") && e.contains("positive integer"),
            "{e}"
        );
        let e = err_of("vit-ti:p5");
        assert!(e.contains("not divisible by the patch size 5"), "{e}");
        let e = err_of("resnet26:w0.001");
        assert!(e.contains("int(64*w)"), "{e}");
        let e = err_of("resnet26:w1:w2");
        assert!(e.contains("given twice"), "{e}");
        let e = err_of("resnet26:");
        assert!(e.contains("empty option"), "{e}");
        let e = err_of("vit-ti:d0");
        assert!(e.contains("`d0`"), "{e}");
        let e = err_of("resnet26:r30");
        assert!(e.contains("divisible by 8"), "{e}");
    }
}
