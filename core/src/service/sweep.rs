//! The sweeper (scheduled; a timer in the local runner): finishes what a dead owner left unfinished. It is the
//! one service that looks across all requests, through the system-role port [`SweepStore`]; everything it then
//! does to a request goes through the same ports, and the same guarded steps, as the request's usual owner:
//!
//! - an ingestion that stopped between its documents and its last message, with no retry of the upload to
//!   finish it (`enqueuedAt` unset after the grace period): resumed from the stored CSV ([`Ingest::resume`]);
//! - a request whose images are all settled but which nobody finalised (its finaliser died and its last
//!   message was dead-lettered): finalised ([`Finaliser::finalise_if_done`], same lease, same guarded update);
//! - a queued webhook delivery quiet for longer than the retry backoff allows (its finaliser died between the
//!   final status and the delivery message, or the message was lost): queued again (same `Webhook-Id`).
//!
//! Each step is idempotent, so two sweeps at once, or a sweep racing a worker, change nothing twice.

use std::time::Duration;

use serde::Serialize;

use super::finalise::Finaliser;
use super::ingest::Ingest;
use crate::config::Config;
use crate::domain::Request;
use crate::error::Result;
use crate::ports::{Clock, DeliveryQueue, SweepStore, WebhookDelivery, WebhookLog};

/// Requests examined per query.
const PAGE: i64 = 100;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub examined: usize,
    pub resumed: usize,
    pub finalised: usize,
    pub webhooks_requeued: usize,
    /// Requests whose repair failed this time (logged; the next sweep tries again).
    pub errors: usize,
}

/// The ports the sweeper uses.
pub struct Sweeper<'a> {
    pub sweep: &'a dyn SweepStore,
    pub webhooks: &'a dyn WebhookLog,
    pub deliveries: &'a dyn DeliveryQueue,
    pub ingest: Ingest<'a>,
    pub finaliser: Finaliser<'a>,
    pub clock: &'a dyn Clock,
    pub config: &'a Config,
}

impl Sweeper<'_> {
    /// One sweep, bounded by `IMGPIPE_SWEEP_MAX_REQUESTS` requests examined.
    pub async fn run(&self) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let now = self.clock.now();
        let grace = Duration::from_secs(self.config.sweep_grace_secs);
        let mut after = None;
        while report.examined < self.config.sweep_max_requests {
            let page = self.sweep.unfinished_requests(now.minus(grace), after.clone(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some((last.created_at, last.id.clone()));
            for request in &page {
                report.examined += 1;
                if let Err(e) = self.repair(request, &mut report).await {
                    tracing::warn!(tenant = %request.tenant, requestId = %request.id, error = %e, "sweep could not repair the request");
                    report.errors += 1;
                }
            }
        }
        let quiet = Duration::from_secs(self.config.webhook_stall_secs);
        for request in self.sweep.stalled_webhooks(now.minus(quiet), PAGE).await? {
            tracing::warn!(tenant = %request.tenant, requestId = %request.id, "webhook delivery went quiet; queueing it again");
            self.deliveries.enqueue(&WebhookDelivery::of(&request.key())).await?;
            self.webhooks.touch_delivery(&request.key(), now).await?;
            report.webhooks_requeued += 1;
        }
        if report != (SweepReport { examined: report.examined, ..SweepReport::default() }) {
            tracing::info!(?report, "sweep repaired requests");
        }
        Ok(report)
    }

    async fn repair(&self, request: &Request, report: &mut SweepReport) -> Result<()> {
        if request.enqueued_at.is_none() {
            tracing::warn!(tenant = %request.tenant, requestId = %request.id, "ingestion never finished; resuming it");
            self.ingest.resume(request).await?;
            report.resumed += 1;
            return Ok(());
        }
        // An exact recount, not the progress counters: a worker that died between settling an image and counting
        // it, and whose message was then dead-lettered, left a counter behind for good.
        if self.finaliser.finalise_if_done(request).await? {
            tracing::warn!(tenant = %request.tenant, requestId = %request.id, "every image was settled but nobody finalised; finalised");
            report.finalised += 1;
        }
        Ok(())
    }
}
