//! The use cases behind the three functions.

pub mod ingest;
pub mod process;
pub mod reports;
pub mod status;
