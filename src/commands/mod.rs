//! One module per subcommand.

pub mod data;
pub mod devices;
pub mod inspect;
pub mod report;
