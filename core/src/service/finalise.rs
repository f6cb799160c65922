//! Finalisation: once every image of a request is settled, one finaliser writes the output CSV, sets the final
//! status and queues the webhook.
//!
//! Concurrent finalisers: one takes the lease (`Requests.finalizingAt`), the others return `false`. A finaliser
//! that fails releases the lease; one that dies keeps it until it expires (`IMGPIPE_FINALISE_LEASE_SECS`), after
//! which the redelivered message of its last image, or the sweeper, takes over. The final status is set by a
//! guarded update that succeeds once, and marks the webhook `queued` in the same write (its outbox record); the
//! delivery message follows. If the finaliser dies between the two, the sweeper queues the delivery again
//! (`SweepStore::stalled_webhooks`).

use std::time::Duration;

use futures::TryStreamExt;

use crate::config::Config;
use crate::csv_output::OutputCsv;
use crate::domain::{Finalisation, Request, RequestKey, RequestStatus, output_csv_key};
use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::ports::{BlobStore, Clock, DeliveryQueue, RequestStore, RowStore, WebhookDelivery};

/// The ports finalisation uses.
pub struct Finaliser<'a> {
    pub requests: &'a dyn RequestStore,
    pub rows: &'a dyn RowStore,
    pub blobs: &'a dyn BlobStore,
    pub deliveries: &'a dyn DeliveryQueue,
    pub clock: &'a dyn Clock,
    pub config: &'a Config,
    pub faults: &'a Faults,
}

impl Finaliser<'_> {
    /// Recounts exactly; if every image is settled, takes the finalisation lease, writes the output CSV, sets the
    /// final status and queues the webhook. `true`: this call finalised the request.
    pub async fn finalise_if_done(&self, request: &Request) -> Result<bool> {
        if request.status.is_final() {
            return Ok(false);
        }
        let key = request.key();
        let id = &key;
        let tally = self.rows.tally(id).await?;
        if tally.settled < request.total_images {
            return Ok(false);
        }
        let lease = Duration::from_secs(self.config.finalise_lease_secs);
        if !self.requests.claim_finalisation(id, self.clock.now(), lease).await? {
            tracing::info!(tenant = %id.tenant, requestId = %id.id, "another finaliser holds this request");
            return Ok(false);
        }
        let fin = Finalisation {
            status: if tally.failed > 0 { RequestStatus::Failed } else { RequestStatus::Completed },
            queue_webhook: request.webhook.is_some(),
            tally,
            output_csv_key: output_csv_key(id),
            at: self.clock.now(),
        };
        let won = match self.write(id, &fin).await {
            Ok(won) => won,
            Err(e) => {
                if let Err(release) = self.requests.release_finalisation(id).await {
                    tracing::warn!(error = %release, "could not release the finalisation lease; it will expire");
                }
                return Err(e);
            }
        };
        if won {
            tracing::info!(
                tenant = %id.tenant, requestId = %id.id,
                status = fin.status.as_str(),
                succeeded = tally.succeeded(),
                failed = tally.failed,
                "request finalised"
            );
            if request.webhook.is_some() {
                self.faults.check("finalise.before_webhook")?;
                self.deliveries.enqueue(&WebhookDelivery::of(id)).await?;
            }
        }
        Ok(won)
    }

    async fn write(&self, id: &RequestKey, fin: &Finalisation) -> Result<bool> {
        self.faults.check("finalise.after_claim")?;
        // Row by row from one query: the finaliser holds the CSV and one batch of rows, not every row.
        let corrupt = |e: csv::Error| Error::Corrupt(format!("output CSV: {e}"));
        let mut csv = OutputCsv::new(Vec::new()).map_err(corrupt)?;
        let mut rows = self.rows.rows_after(id, None).await?;
        while let Some(row) = rows.try_next().await? {
            csv.row(&row, &row.output_urls()).map_err(corrupt)?;
        }
        let csv = csv.finish().map_err(corrupt)?;
        self.blobs.put(&self.config.outputs_bucket, &fin.output_csv_key, csv, "text/csv").await?;
        self.faults.check("finalise.before_status")?;
        self.requests.finalise(id, fin).await
    }
}
