//! The use cases behind the functions. Each service is a struct of the ports it uses (built by `App`), so that
//! tests can run it on the in-memory twins.

pub mod cursor;
pub mod deliver;
pub mod finalise;
pub mod ingest;
pub mod pages;
pub mod process;
pub mod reports;
pub mod status;
pub mod sweep;
pub mod urls;

#[cfg(test)]
mod interleaving;
