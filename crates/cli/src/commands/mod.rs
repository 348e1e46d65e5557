//! One function per subcommand: resolve settings, call the libraries, print results.

pub mod bench;
pub mod bias;
pub mod cross_validate;
pub mod data;
pub mod evaluate;
pub mod models;
pub mod monitor;
pub mod robustness;
pub mod serve;
pub mod study;
pub mod tracking;
pub mod train;
pub mod weights;
