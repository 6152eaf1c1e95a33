//! Building a method from its name (for configs and the command line).

use crate::aggregator::Aggregator;
use crate::error::{MtoError, Result};
use crate::methods::{
    aligned_mtl::AlignedMtl, cagrad::CaGrad, dwa::Dwa, graddrop::GradDrop, gradnorm::GradNorm,
    gradvac::GradVac, imtl_g::ImtlG, imtl_h::ImtlH, imtl_l::ImtlL, linear::Linear, mgda::Mgda,
    mgda_ub::MgdaUb, nash_mtl::NashMtl, pcgrad::PcGrad, rlw::Rlw, uncertainty::Uncertainty,
    upgrad::UpGrad,
};

/// Names accepted by [`build`], each with its default settings.
pub const METHOD_NAMES: &[&str] = &[
    "uniform",
    "uncertainty",
    "imtl_l",
    "dwa",
    "rlw",
    "gradnorm",
    "pcgrad",
    "cagrad",
    "nash_mtl",
    "gradvac",
    "aligned_mtl",
    "upgrad",
    "mgda",
    "mgda_ub",
    "imtl_g",
    "imtl_g_rep",
    "imtl_h",
    "graddrop",
];

/// The method `name` with its default settings for `tasks` tasks; randomised methods are
/// seeded with `seed`. Linear scalarization with chosen weights: [`Linear::new`].
pub fn build(name: &str, tasks: usize, seed: u64) -> Result<Box<dyn Aggregator>> {
    if tasks == 0 {
        return Err(MtoError::invalid("build", "tasks = 0, expected T >= 1"));
    }
    Ok(match name {
        "uniform" => Box::new(Linear::uniform(tasks)?),
        "uncertainty" => Box::new(Uncertainty::new(tasks)?),
        "imtl_l" => Box::new(ImtlL::new(tasks)?),
        "dwa" => Box::new(Dwa::new(tasks)?),
        "rlw" => Box::new(Rlw::new(tasks, seed)?),
        "gradnorm" => Box::new(GradNorm::new(tasks)?),
        "pcgrad" => Box::new(PcGrad::new(seed)),
        "cagrad" => Box::new(CaGrad::new()),
        "nash_mtl" => Box::new(NashMtl::new()),
        "gradvac" => Box::new(GradVac::new(seed)),
        "aligned_mtl" => Box::new(AlignedMtl::new()),
        "upgrad" => Box::new(UpGrad::new()),
        "mgda" => Box::new(Mgda::new()),
        "mgda_ub" => Box::new(MgdaUb::new()),
        "imtl_g" => Box::new(ImtlG::new()),
        "imtl_g_rep" => Box::new(ImtlG::at_representation()),
        "imtl_h" => Box::new(ImtlH::new(tasks)?),
        "graddrop" => Box::new(GradDrop::new(tasks, seed)?),
        other => {
            return Err(MtoError::invalid(
                "build",
                format!(
                    "unknown method `{other}`, expected one of: {}",
                    METHOD_NAMES.join(", ")
                ),
            ));
        }
    })
}
