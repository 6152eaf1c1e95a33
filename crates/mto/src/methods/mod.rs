//! One file per method, all behind [`crate::Aggregator`].

pub mod aligned_mtl;
pub mod cagrad;
pub mod dwa;
pub mod graddrop;
pub mod gradnorm;
pub mod gradvac;
pub mod imtl_g;
pub mod imtl_h;
pub mod imtl_l;
pub mod linear;
pub mod mgda;
pub mod mgda_ub;
pub mod nash_mtl;
pub mod pcgrad;
pub mod rlw;
pub mod uncertainty;
pub mod upgrad;
