//! One module per subcommand.

pub mod devices;
pub mod inspect;
pub mod pbt;
pub mod presets;
pub mod run;
