//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod azurite;
pub mod clips;
pub mod fleet;
pub mod frames;
pub mod pipeline;
