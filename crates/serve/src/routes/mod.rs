//! One module per group of endpoints.

pub mod admin;
pub mod explain;
pub mod feedback;
pub mod health;
pub mod model;
pub mod predict;
pub mod study;
