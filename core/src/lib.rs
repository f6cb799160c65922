//! imgpipe core: the domain, the ports and their adapters, and the services the Lambda functions call.
//!
//! Each Lambda function is a thin adapter: it parses its event, calls a service here, and maps the result.

pub mod adapters;
pub mod api;
pub mod app;
pub mod auth;
pub mod compress;
pub mod config;
pub mod csv_input;
pub mod csv_output;
pub mod decode_budget;
pub mod domain;
pub mod error;
pub mod failure;
pub mod fault;
pub mod fetch;
pub mod net_guard;
pub mod ports;
#[cfg(test)]
mod properties;
pub mod retry;
pub mod service;
pub mod telemetry;
pub mod webhook;

pub use app::App;
pub use config::Config;
pub use error::{Error, Result};

/// Re-exported for tests that read the stored documents as they are.
pub use mongodb::bson;
