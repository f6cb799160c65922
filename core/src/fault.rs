//! Fault injection for crash tests: a test arms a named point, and the next pass through it fails as if the
//! function had died there. Nothing arms a point outside tests.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<HashSet<&'static str>>>);

impl Faults {
    /// Arms `point` for one hit.
    pub fn arm(&self, point: &'static str) {
        self.0.lock().expect("fault set").insert(point);
    }

    /// Fails once if `point` is armed.
    pub fn check(&self, point: &'static str) -> Result<()> {
        if self.0.lock().expect("fault set").remove(point) { Err(Error::Injected(point)) } else { Ok(()) }
    }
}
