//! Fixtures the covidct tests share, so that each is written once: PyTorch checkpoints laid out
//! as `torch.save` writes them ([`torch`]), zip archives ([`archive`]), generated images and a learnable two-class dataset
//! ([`images`], [`dataset`]), the paths of inputs from outside the repository ([`inputs`]) and,
//! with the `model` feature, package metadata and random-weight predictors ([`package`]). A
//! dev-dependency only; nothing here ships.
//!
//! Fixtures panic on failure: they run inside tests, where a panic is a failed test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod archive;
pub mod dataset;
pub mod images;
pub mod inputs;
#[cfg(feature = "model")]
pub mod package;
pub mod torch;
