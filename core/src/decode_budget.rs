//! The worker-wide decode budget: images are decoded at once only while the sum of what they hold (each one's
//! decode budget, `compress::plan`, plus its input bytes) fits the memory the process gives them, so that a batch of
//! large images waits its turn instead of running the function out of memory (which redelivers the whole batch).
//! It replaces a fixed number of images at once: many small images run together, one huge one runs alone.
//!
//! One budget per process (it lives in the `App`, which a Lambda execution environment and the local runner
//! build once, and whose clones the local runner's worker loops share): `IMGPIPE_DECODE_BUDGET_BYTES`, or the
//! function's memory minus `IMGPIPE_MEMORY_RESERVE_BYTES`. The reserve covers the runtime and clients, outputs
//! being stored, the finaliser's rows, and the fetched bodies waiting for their turn: at most [`FETCH_AHEAD`]
//! images are fetched or waiting at once, so waiting bodies are bounded too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// Images being fetched, or fetched and waiting for their share of the budget, at once.
pub const FETCH_AHEAD: usize = 4;

/// The budget is counted in KiB (a semaphore holds at most `u32::MAX >> 3` permits: up to 512 GiB).
const UNIT: u64 = 1024;

#[derive(Debug)]
pub struct DecodeBudget {
    bytes: Arc<Semaphore>,
    capacity: u64,
    ahead: Semaphore,
    held: Arc<Held>,
}

/// What is admitted now, and the most ever admitted at once.
#[derive(Debug, Default)]
struct Held {
    now: AtomicU64,
    peak: AtomicU64,
}

/// An image's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    held: Arc<Held>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.held.now.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// An image that cannot be decoded within the whole budget, even alone.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("decoding this image holds {needed} bytes, over the worker's decode budget of {capacity} bytes")]
pub struct OverBudget {
    pub needed: u64,
    pub capacity: u64,
}

impl DecodeBudget {
    pub fn new(capacity: u64) -> Self {
        let units = (capacity / UNIT).min(Semaphore::MAX_PERMITS as u64);
        DecodeBudget {
            bytes: Arc::new(Semaphore::new(units as usize)),
            capacity: units * UNIT,
            ahead: Semaphore::new(FETCH_AHEAD),
            held: Arc::default(),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The most bytes admitted at once since the process started.
    pub fn peak(&self) -> u64 {
        self.held.peak.load(Ordering::Relaxed)
    }

    /// Waits for one of the [`FETCH_AHEAD`] places of an image being fetched or waiting; keep it until admitted.
    pub async fn fetch_slot(&self) -> SemaphorePermit<'_> {
        self.ahead.acquire().await.expect("the decode budget's semaphores are never closed")
    }

    /// Waits until `bytes` fit beside what is admitted (first come, first served), and holds them.
    pub async fn admit(&self, bytes: u64) -> Result<Admitted, OverBudget> {
        let units = bytes.div_ceil(UNIT);
        if units * UNIT > self.capacity {
            return Err(OverBudget { needed: bytes, capacity: self.capacity });
        }
        let permit = self.bytes.clone().acquire_many_owned(units as u32).await.expect("never closed");
        let bytes = units * UNIT;
        let now = self.held.now.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.held.peak.fetch_max(now, Ordering::Relaxed);
        Ok(Admitted { _permit: permit, bytes, held: self.held.clone() })
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn admits_while_it_fits_first_come_first_served() {
        let budget = DecodeBudget::new(10 * UNIT);
        let a = budget.admit(6 * UNIT).await.unwrap();
        let b = budget.admit(3 * UNIT).await.unwrap();
        // 6 + 3 + 6 > 10: waits until enough is given back; a smaller one asking later waits behind it.
        let mut third = Box::pin(budget.admit(6 * UNIT));
        assert!((&mut third).now_or_never().is_none(), "admitted over budget");
        let mut fourth = Box::pin(budget.admit(UNIT));
        assert!((&mut fourth).now_or_never().is_none(), "overtook a waiting image");
        drop(b);
        assert!((&mut third).now_or_never().is_none(), "6 + 6 > 10");
        drop(a);
        let third = (&mut third).now_or_never().expect("room for it now").unwrap();
        let fourth = (&mut fourth).now_or_never().expect("and for this one").unwrap();
        assert_eq!(budget.peak(), 9 * UNIT);
        drop((third, fourth));
        let whole = budget.admit(10 * UNIT).await.unwrap();
        assert_eq!(budget.peak(), 10 * UNIT);
        drop(whole);
        assert_eq!(
            budget.admit(10 * UNIT + 1).await.unwrap_err(),
            OverBudget { needed: 10 * UNIT + 1, capacity: 10 * UNIT }
        );
    }
}
