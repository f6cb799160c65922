//! Exactly-once, tested deterministically: every interleaving of two concurrent deliveries through the worker's
//! steps, on the in-memory twins, with a failure injected at each step (`…interleaving…` tests).
//!
//! The steps, each a port call the scheduler holds and releases one at a time: settle the slot
//! (`settle_image`), count (`increment`, then `mark_counted`), read the counters (`all_progress`), recount
//! (`tally`), claim the finalisation lease (`claim_finalisation`), write the output CSV (`put`), set the final
//! status (`finalise`), queue the webhook (`enqueue`). The other port calls (reads of one document, the
//! `processing` mark, the row's completion, the lease's release) run as part of the step before them.
//!
//! A failure at a step is one of: the call fails (the delivery returns an error and its message is retried)
//! or the delivery dies just before the call (no clean-up at all; its message comes back after the queue's
//! visibility timeout, longer than the finalisation lease). After the interleaving, every delivery that did not
//! finish is delivered again, queued webhooks are delivered, and the sweeper runs: then each image is counted
//! once, the request is final with exact counts, one output CSV matching its rows exists, and exactly one
//! webhook delivery was queued.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;

use crate::adapters::memory::{Checkpoint, Gate, ManualClock, MemoryBlobs, MemoryQueues, MemoryStore};
use crate::app::App;
use crate::config::Config;
use crate::csv_output::write_csv;
use crate::domain::{ImageJob, ImageResult, ImageState, RequestStatus, Timestamp, WebhookAttempt, WebhookState};
use crate::error::{Error, Result};
use crate::ports::Clock;

const STEPS: [&str; 9] = [
    "settle_image",
    "increment",
    "mark_counted",
    "all_progress",
    "tally",
    "claim_finalisation",
    "put",
    "finalise",
    "enqueue",
];

tokio::task_local! {
    static DELIVERY: usize;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The port call returns an error.
    Error,
    /// The delivery dies just before the port call.
    Crash,
}

/// Where a failure is injected: delivery, its n-th step, and how.
#[derive(Debug, Clone, Copy)]
struct Fault {
    delivery: usize,
    step: usize,
    failure: Failure,
}

#[derive(Default)]
struct State {
    /// Deliveries held at a step, with the step.
    waiting: BTreeMap<usize, &'static str>,
    /// The delivery allowed through, and how.
    grant: Option<(usize, bool)>,
}

/// The scheduler's side of the twins' checkpoints: a delivery reaching a step waits there until granted.
#[derive(Default)]
struct Scheduler {
    state: Mutex<State>,
}

#[async_trait]
impl Checkpoint for Scheduler {
    async fn pass(&self, op: &'static str) -> Result<()> {
        // Calls outside a delivery (setting up, recovering, checking) and calls that are not steps pass freely.
        let Ok(me) = DELIVERY.try_with(|d| *d) else { return Ok(()) };
        if !STEPS.contains(&op) {
            return Ok(());
        }
        self.state.lock().unwrap().waiting.insert(me, op);
        loop {
            {
                let mut state = self.state.lock().unwrap();
                if let Some((who, ok)) = state.grant
                    && who == me
                {
                    state.grant = None;
                    state.waiting.remove(&me);
                    return if ok { Ok(()) } else { Err(Error::Injected("interleaving")) };
                }
            }
            tokio::task::yield_now().await;
        }
    }
}

/// Depth-first enumeration of the scheduler's choices, replaying a prefix each run.
#[derive(Default)]
struct Explorer {
    /// (choice, options) at each decision of the current run.
    path: Vec<(usize, usize)>,
    depth: usize,
}

impl Explorer {
    fn choose(&mut self, options: usize) -> usize {
        if self.depth == self.path.len() {
            self.path.push((0, options));
        }
        let (choice, known) = self.path[self.depth];
        assert_eq!(known, options, "the replay diverged: the code is not deterministic under this schedule");
        self.depth += 1;
        choice
    }

    /// Moves to the next schedule; `false` when every schedule has been run.
    fn next(&mut self) -> bool {
        self.path.truncate(self.depth);
        self.depth = 0;
        while let Some((choice, options)) = self.path.pop() {
            if choice + 1 < options {
                self.path.push((choice + 1, options));
                return true;
            }
        }
        false
    }
}

struct World {
    app: App,
    store: Arc<MemoryStore>,
    blobs: Arc<MemoryBlobs>,
    queues: Arc<MemoryQueues>,
    clock: Arc<ManualClock>,
    scheduler: Arc<Scheduler>,
}

fn config() -> Config {
    serde_json::from_value(serde_json::json!({
        "mongodb_uri": "mongodb://unused",
        "uploads_bucket": "uploads",
        "outputs_bucket": "outputs",
        "queue_url": "memory://images",
        "webhook_queue_url": "memory://webhooks",
        "webhook_secret": "s3cret",
    }))
    .unwrap()
}

/// A request of `images` images (one per row) dealt over `shards` counters, with a webhook; returns its jobs.
/// The application of every run of a scenario (building its HTTP client takes milliseconds); each run gets fresh
/// twins through [`world`].
fn template(shards: u32) -> App {
    let mut config = config();
    config.progress_shards = shards;
    let clock = Arc::new(ManualClock::default());
    App::in_memory(config, Arc::default(), Arc::default(), Arc::default(), clock).unwrap()
}

async fn world(template: &App, images: usize) -> (World, Vec<ImageJob>) {
    let scheduler = Arc::new(Scheduler::default());
    let gate = Gate::new(scheduler.clone());
    let store = Arc::new(MemoryStore::with_gate(gate.clone()));
    let blobs = Arc::new(MemoryBlobs::with_gate(gate.clone()));
    let queues = Arc::new(MemoryQueues::with_gate(gate));
    let clock = Arc::new(ManualClock::at(Timestamp::from_millis(1_764_072_000_000)));
    let mut app = template.clone();
    app.set_documents(store.clone());
    (app.blobs, app.jobs, app.deliveries, app.clock) = (blobs.clone(), queues.clone(), queues.clone(), clock.clone());
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for n in 1..=images {
        csv.push_str(&format!("{n},P{n},https://img.example.com/{n}.jpg\n"));
    }
    let webhook = crate::domain::ImageUrl::parse("https://hooks.example.com/x").unwrap();
    let tenant = crate::domain::TenantId::parse("acme").unwrap();
    app.ingest().upload(&tenant, csv.as_bytes(), None, Some(webhook)).await.unwrap();
    let jobs = queues.jobs();
    (World { app, store, blobs, queues, clock, scheduler }, jobs)
}

fn result_of(world: &World, job: &ImageJob) -> ImageResult {
    let key = job.output_key();
    ImageResult::Succeeded { output_url: world.app.urls().stored(&key), output_key: key }
}

/// One run on a fresh request: the jobs at `deliveries` (indices into the request's jobs; the same index twice
/// is a duplicate delivery) recorded concurrently under the explorer's schedule, `fault` injected; then recovery
/// and the checks. Returns whether the fault was reached, and how many steps each delivery took.
async fn run(
    template: &App,
    deliveries: &[usize],
    images: usize,
    fault: Option<Fault>,
    explorer: &mut Explorer,
) -> (bool, Vec<usize>) {
    let (world, jobs) = world(template, images).await;
    let deliveries: Vec<ImageJob> = deliveries.iter().map(|&i| jobs[i].clone()).collect();
    let deliveries = &deliveries[..];
    let mut handles = Vec::new();
    for (n, job) in deliveries.iter().enumerate() {
        let (app, job, result) = (world.app.clone(), job.clone(), result_of(&world, job));
        handles.push(Some(tokio::spawn(
            DELIVERY.scope(n, async move { app.worker().record(&job, &result).await.is_ok() }),
        )));
    }
    let mut steps = vec![0_usize; deliveries.len()];
    let mut unfinished = vec![false; deliveries.len()];
    let mut fault_reached = false;
    loop {
        // Let every live delivery run until it waits at a step or finishes.
        let mut settled = false;
        for _ in 0..10_000 {
            tokio::task::yield_now().await;
            let waiting = world.scheduler.state.lock().unwrap().waiting.len();
            let live = handles.iter().flatten().filter(|h| !h.is_finished()).count();
            if waiting == live {
                settled = true;
                break;
            }
        }
        assert!(settled, "a delivery neither finished nor reached a step");
        let waiting: Vec<(usize, &'static str)> =
            world.scheduler.state.lock().unwrap().waiting.iter().map(|(d, op)| (*d, *op)).collect();
        if waiting.is_empty() {
            break;
        }
        let (who, _) = waiting[explorer.choose(waiting.len())];
        let failure = fault.filter(|f| f.delivery == who && f.step == steps[who]).map(|f| f.failure);
        steps[who] += 1;
        match failure {
            Some(Failure::Crash) => {
                fault_reached = true;
                handles[who].take().expect("a live delivery").abort();
                world.scheduler.state.lock().unwrap().waiting.remove(&who);
                unfinished[who] = true;
            }
            other => {
                fault_reached |= other.is_some();
                world.scheduler.state.lock().unwrap().grant = Some((who, other.is_none()));
            }
        }
    }
    for (n, handle) in handles.into_iter().enumerate() {
        if let Some(handle) = handle {
            unfinished[n] |= !handle.await.unwrap();
        }
    }
    recover(&world, deliveries, &unfinished).await;
    check(&world, images, fault_reached).await;
    (fault_reached, steps)
}

/// What follows in production: failed or dead deliveries come back after the visibility timeout (longer than the
/// lease), queued webhooks are delivered, and the sweeper runs on its schedule.
async fn recover(world: &World, deliveries: &[ImageJob], unfinished: &[bool]) {
    world.clock.advance(Duration::from_secs(world.app.config.finalise_lease_secs + 240));
    for (job, _) in deliveries.iter().zip(unfinished).filter(|(_, u)| **u) {
        world.app.worker().record(job, &result_of(world, job)).await.expect("a redelivery succeeds");
    }
    deliver_queued(world).await;
    world.clock.advance(Duration::from_secs(world.app.config.webhook_stall_secs + world.app.config.sweep_grace_secs));
    let report = world.app.sweeper().run().await.expect("the sweep succeeds");
    assert_eq!(report.errors, 0, "{report:?}");
    deliver_queued(world).await;
}

/// The delivery handler, reduced to its record: each queued delivery is attempted and delivered.
async fn deliver_queued(world: &World) {
    for delivery in world.queues.deliveries() {
        let key = delivery.key();
        let id = &key;
        let now = world.clock.now();
        world
            .app
            .webhooks
            .record_attempt(id, &WebhookAttempt { at: now, status: Some(200), error: None })
            .await
            .unwrap();
        world.app.webhooks.settle_delivery(id, WebhookState::Delivered, now).await.unwrap();
    }
}

async fn check(world: &World, images: usize, faulted: bool) {
    let ids: Vec<_> = world.queues.jobs().iter().map(|j| j.key()).collect();
    let id = &ids[0];
    let request = world.app.requests.get_request(id).await.unwrap().unwrap();
    assert_eq!(request.status, RequestStatus::Completed, "one final status");
    assert_eq!((request.succeeded_images, request.failed_images), (images as i64, 0), "exact counts");
    let rows: Vec<_> = world.app.rows.rows_after(id, None).await.unwrap().try_collect().await.unwrap();
    for row in &rows {
        assert_eq!(row.settled_images, 1, "row {}: its image settled once", row.serial_number);
        assert!(row.images.iter().all(|s| s.state == ImageState::Succeeded && s.counted));
        assert!(row.completed_at.is_some());
    }
    let counters = world.app.progress.all_progress(id).await.unwrap();
    assert!(counters.iter().all(|c| c.is_complete()), "{counters:?}");
    let key = request.output_csv_key.clone().expect("an output CSV");
    let stored = world.store_blob(&key).await;
    assert_eq!(stored, write_csv(&rows).unwrap(), "the output CSV matches the final rows");
    let puts = world.blobs.puts_of(&key);
    assert!(puts == 1 || (faulted && puts == 2), "output CSV written {puts} times");
    assert_eq!(world.queues.deliveries().len(), 1, "exactly one webhook delivery queued");
    let hook = request.webhook.as_ref().map(|w| w.state);
    let hook_now = world.app.requests.get_request(id).await.unwrap().unwrap().webhook.unwrap().state;
    assert!(hook.is_some() && hook_now == WebhookState::Delivered);
    let _ = &world.store;
}

impl World {
    async fn store_blob(&self, key: &str) -> Vec<u8> {
        use crate::ports::BlobStore;
        self.blobs.get(&self.app.config.outputs_bucket, key).await.unwrap().expect("the output CSV exists")
    }
}

/// Runs every schedule of `deliveries` with no fault, then with each fault at each step of each delivery.
/// Returns (schedules run, faulted schedules run).
async fn explore(deliveries: &[usize], images: usize, shards: u32) -> (usize, usize) {
    let template = template(shards);
    let mut schedules = 0;
    let mut faulted = 0;
    // Every schedule without a failure, learning how many steps each delivery can take.
    let mut longest = vec![0; deliveries.len()];
    let mut explorer = Explorer::default();
    loop {
        let (_, steps) = run(&template, deliveries, images, None, &mut explorer).await;
        schedules += 1;
        longest.iter_mut().zip(&steps).for_each(|(l, s)| *l = (*l).max(*s));
        if !explorer.next() {
            break;
        }
    }
    // Then every schedule with each failure at each step a delivery can reach. Two deliveries of the same job are
    // interchangeable, so failures of the second one would only repeat the first one's.
    let failing = if deliveries.windows(2).all(|w| w[0] == w[1]) { 1 } else { deliveries.len() };
    for (delivery, &steps) in longest.iter().enumerate().take(failing) {
        for step in 0..steps {
            for failure in [Failure::Error, Failure::Crash] {
                let fault = Some(Fault { delivery, step, failure });
                let mut explorer = Explorer::default();
                loop {
                    let (reached, _) = run(&template, deliveries, images, fault, &mut explorer).await;
                    schedules += 1;
                    faulted += usize::from(reached);
                    if !explorer.next() {
                        break;
                    }
                }
            }
        }
    }
    (schedules, faulted)
}

#[tokio::test]
async fn interleaving_two_deliveries_of_the_same_image() {
    let (schedules, faulted) = explore(&[0, 0], 1, 1).await;
    println!("two deliveries of one image: {schedules} schedules, {faulted} with a failure injected");
    assert!(faulted > 0);
}

#[tokio::test]
async fn interleaving_the_last_two_images_on_one_counter() {
    let (schedules, faulted) = explore(&[0, 1], 2, 1).await;
    println!("last two images, one counter: {schedules} schedules, {faulted} with a failure injected");
    assert!(faulted > 0);
}

#[tokio::test]
async fn interleaving_the_last_two_images_on_two_counters() {
    let (schedules, faulted) = explore(&[0, 1], 2, 2).await;
    println!("last two images, two counters: {schedules} schedules, {faulted} with a failure injected");
    assert!(faulted > 0);
}
