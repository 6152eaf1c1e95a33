//! `scalarize presets [NAME]`: list the built-in presets or print one as TOML to start from.

use anyhow::Result;

use crate::config::{Config, presets};

/// Lists presets, or prints preset `name` resolved (every key, with defaults).
pub fn run(name: Option<&str>) -> Result<()> {
    match name {
        None => {
            for n in presets::NAMES {
                let c = Config::preset(n)?;
                println!(
                    "{n:<16} dataset {:<15} model {:<18} root {}",
                    c.data.dataset,
                    c.model.spec,
                    c.data.root.display()
                );
            }
            println!(
                "\n`scalarize presets NAME` prints one in full; use it with --preset NAME or start a config from it."
            );
        }
        Some(n) => {
            println!(
                "# preset `{n}`, every key resolved\n{}",
                Config::preset(n)?.to_toml()
            );
        }
    }
    Ok(())
}
