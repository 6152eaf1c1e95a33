//! The CUDA sources of the top-level `kernels/` folder, embedded at build time, and their
//! compilation to PTX with NVRTC (no CUDA toolkit needed to build the workspace).

use cudarc::nvrtc::{CompileOptions, Ptx};

use super::libs::{CudaUnavailable, require_nvrtc};

/// One `.cu` file with the headers it includes.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// File name under `kernels/`, e.g. `"grad_gram.cu"`.
    pub name: &'static str,
    /// The file's text.
    pub text: &'static str,
}

/// Headers that `.cu` files may `#include "..."` (NVRTC gets them pasted in place).
const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../../../../kernels/common.cuh"))];

/// The fused weighted multi-task loss.
pub const WEIGHTED_LOSS: KernelSource = KernelSource {
    name: "weighted_loss.cu",
    text: include_str!("../../../../kernels/weighted_loss.cu"),
};

/// The batched segmented Gram matrices.
pub const GRAD_GRAM: KernelSource = KernelSource {
    name: "grad_gram.cu",
    text: include_str!("../../../../kernels/grad_gram.cu"),
};

/// ReLU and GELU, forward and backward.
pub const ACTIVATION: KernelSource = KernelSource {
    name: "activation.cu",
    text: include_str!("../../../../kernels/activation.cu"),
};

/// Scaled dot-product attention helpers (scaling, masking) around the batched GEMMs.
pub const ATTENTION: KernelSource = KernelSource {
    name: "attention.cu",
    text: include_str!("../../../../kernels/attention.cu"),
};

/// Batch norm (training statistics, running statistics, eval; fused ReLU / residual epilogues).
pub const BATCH_NORM: KernelSource = KernelSource {
    name: "batch_norm.cu",
    text: include_str!("../../../../kernels/batch_norm.cu"),
};

/// Weighted combination of T per-task gradient rows.
pub const COMBINE: KernelSource = KernelSource {
    name: "combine.cu",
    text: include_str!("../../../../kernels/combine.cu"),
};

/// Concatenation and split along an axis.
pub const CONCAT: KernelSource = KernelSource {
    name: "concat.cu",
    text: include_str!("../../../../kernels/concat.cu"),
};

/// 2-D convolution: im2col / col2im around the GEMMs.
pub const CONV: KernelSource = KernelSource {
    name: "conv.cu",
    text: include_str!("../../../../kernels/conv.cu"),
};

/// Softmax cross-entropy and BCE with logits.
pub const CROSS_ENTROPY: KernelSource = KernelSource {
    name: "cross_entropy.cu",
    text: include_str!("../../../../kernels/cross_entropy.cu"),
};

/// Elementwise arithmetic and bias broadcasts.
pub const ELEMENTWISE: KernelSource = KernelSource {
    name: "elementwise.cu",
    text: include_str!("../../../../kernels/elementwise.cu"),
};

/// Layer norm, forward and backward.
pub const LAYER_NORM: KernelSource = KernelSource {
    name: "layer_norm.cu",
    text: include_str!("../../../../kernels/layer_norm.cu"),
};

/// Fused optimizer updates (SGD with momentum, AdamW).
pub const OPTIM: KernelSource = KernelSource {
    name: "optim.cu",
    text: include_str!("../../../../kernels/optim.cu"),
};

/// Axis permutations and 2-D transposes.
pub const PERMUTE: KernelSource = KernelSource {
    name: "permute.cu",
    text: include_str!("../../../../kernels/permute.cu"),
};

/// Average, max and global-average pooling.
pub const POOL: KernelSource = KernelSource {
    name: "pool.cu",
    text: include_str!("../../../../kernels/pool.cu"),
};

/// Sums and means, whole and along an axis.
pub const REDUCE: KernelSource = KernelSource {
    name: "reduce.cu",
    text: include_str!("../../../../kernels/reduce.cu"),
};

/// Softmax over the last axis, forward and backward.
pub const SOFTMAX: KernelSource = KernelSource {
    name: "softmax.cu",
    text: include_str!("../../../../kernels/softmax.cu"),
};

/// Bilinear and nearest 2-D upsampling.
pub const UPSAMPLE: KernelSource = KernelSource {
    name: "upsample.cu",
    text: include_str!("../../../../kernels/upsample.cu"),
};

/// Every `.cu` file of `kernels/` (a test checks this list against the folder).
pub const ALL_SOURCES: &[KernelSource] = &[
    WEIGHTED_LOSS,
    GRAD_GRAM,
    ACTIVATION,
    ATTENTION,
    BATCH_NORM,
    COMBINE,
    CONCAT,
    CONV,
    CROSS_ENTROPY,
    ELEMENTWISE,
    LAYER_NORM,
    OPTIM,
    PERMUTE,
    POOL,
    REDUCE,
    SOFTMAX,
    UPSAMPLE,
];

/// Why a kernel source did not become PTX.
#[derive(Debug)]
pub enum CompileFailure {
    /// NVRTC cannot be loaded here.
    Unavailable(CudaUnavailable),
    /// NVRTC rejected the source; `log` is its diagnostic output.
    Rejected {
        /// The `.cu` file.
        name: &'static str,
        /// The target architecture, e.g. `"compute_90"`.
        arch: String,
        /// NVRTC's log.
        log: String,
    },
    /// An `#include` names a header that is not in the embedded list.
    UnknownHeader {
        /// The `.cu` file.
        name: &'static str,
        /// The header it asked for.
        header: String,
    },
}

impl std::fmt::Display for CompileFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unavailable(e) => write!(f, "{e}"),
            Self::Rejected { name, arch, log } => {
                write!(
                    f,
                    "NVRTC failed to compile kernels/{name} for {arch}:\n{log}"
                )
            }
            Self::UnknownHeader { name, header } => write!(
                f,
                "kernels/{name} includes \"{header}\", which is not an embedded header"
            ),
        }
    }
}

impl std::error::Error for CompileFailure {}

/// The source with every `#include "x.cuh"` replaced by the header's text.
pub fn assemble(src: &KernelSource) -> Result<String, CompileFailure> {
    let mut out = String::with_capacity(src.text.len() + 4096);
    for line in src.text.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("#include") {
            let header = rest
                .trim()
                .trim_matches(|c| c == '"' || c == '<' || c == '>');
            match HEADERS.iter().find(|(h, _)| *h == header) {
                Some((_, text)) => {
                    // `#pragma once` is meaningless once pasted.
                    for hl in text.lines().filter(|l| l.trim() != "#pragma once") {
                        out.push_str(hl);
                        out.push('\n');
                    }
                }
                None => {
                    return Err(CompileFailure::UnknownHeader {
                        name: src.name,
                        header: header.to_string(),
                    });
                }
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Compiles `src` to PTX for `arch` (`"compute_80"`, `"sm_90"`, ...) with NVRTC.
pub fn compile_ptx(src: &KernelSource, arch: &str) -> Result<Ptx, CompileFailure> {
    require_nvrtc().map_err(CompileFailure::Unavailable)?;
    let text = assemble(src)?;
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
        ],
        name: Some(src.name.to_string()),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(text, opts).map_err(|e| {
        let log = match &e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => {
                log.to_string_lossy().into_owned()
            }
            other => format!("{other}"),
        };
        CompileFailure::Rejected {
            name: src.name,
            arch: arch.to_string(),
            log,
        }
    })
}
