//! String specs naming a model: the backbone (`resnet26:w0.25`) and its heads (`10,a40,d3`).

pub mod heads;
pub mod model;

pub use heads::{HeadSpec, HeadsSpec};
pub use model::{Family, ModelSpec, VitSize, resnet_base_width};
