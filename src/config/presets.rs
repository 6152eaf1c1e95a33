//! Built-in presets: complete, commented configs in `src/config/presets/*.toml`.

use anyhow::{Result, bail};

/// Preset names.
pub const NAMES: &[&str] = &[
    "digits-mdl",
    "multimnist-mtl",
    "cifar-stl",
    "domainnet",
    "celeba",
    "taskonomy-tiny",
];

/// The TOML text of preset `name`.
pub fn text(name: &str) -> Result<&'static str> {
    Ok(match name {
        "digits-mdl" => include_str!("presets/digits-mdl.toml"),
        "multimnist-mtl" => include_str!("presets/multimnist-mtl.toml"),
        "cifar-stl" => include_str!("presets/cifar-stl.toml"),
        "domainnet" => include_str!("presets/domainnet.toml"),
        "celeba" => include_str!("presets/celeba.toml"),
        "taskonomy-tiny" => include_str!("presets/taskonomy-tiny.toml"),
        other => bail!(
            "preset: unknown `{other}`, expected one of {}",
            NAMES.join(", ")
        ),
    })
}
