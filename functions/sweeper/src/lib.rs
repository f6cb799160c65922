//! Sweeper function, run on a schedule (EventBridge Scheduler): finishes what a dead owner left unfinished
//! (see `imgpipe_core::service::sweep`).

use imgpipe_core::App;
use imgpipe_core::service::sweep::SweepReport;

/// One sweep. An `Err` fails the invocation (the scheduler's retry policy and the next run try again).
pub async fn handle(app: &App) -> imgpipe_core::Result<SweepReport> {
    app.sweeper().run().await
}
