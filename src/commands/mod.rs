//! One module per subcommand.

pub mod data;
pub mod devices;
pub mod inspect;
pub mod pbt;
pub mod presets;
pub mod report;
pub mod run;
