//! One module per subcommand: resolve settings, call the libraries, print results.

pub mod bench;
pub mod cross_validate;
pub mod data;
pub mod evaluate;
pub mod models;
pub mod monitor;
pub mod predict;
pub mod runs;
pub mod serve;
pub mod shortcut;
pub mod study;
pub mod train;
pub mod weights;
