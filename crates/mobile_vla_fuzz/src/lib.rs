//! Fuzz targets for the parsers of untrusted bytes (see `src/main.rs` for the driver).

pub mod differential;
pub mod targets;
