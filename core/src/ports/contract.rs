//! The port contract: one suite of behaviours every implementation of the document ports must have, run against
//! the in-memory twin (`cargo test -p imgpipe-core`) and against the MongoDB adapter on the stack's server
//! (`tests/tests/port_contract.rs`). A twin that passes it behaves like the server on everything the services
//! rely on, guarded updates with exactly one winner included, so tests on the twin mean something.
//!
//! [`crate::port_contract_tests!`] turns the suite into one `#[tokio::test]` per behaviour, given an async
//! function that makes a fresh, empty store for a test name.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use futures::future::join_all;

use crate::app::DocumentStore;
use crate::csv_input::RowError;
use crate::domain::{
    Finalisation, ImageJob, ImageResult, ImageState, ImageUrl, ListFilter, ProgressShard, QuotaOverrides, Rejection,
    Request, RequestId, RequestKey, RequestStatus, Row, Source, StoredObject, Tally, TenantId, Timestamp, Usage,
    Visible, Webhook, WebhookAttempt, WebhookState,
};
use crate::failure::FailureReason;

/// Every behaviour of the suite, by name.
#[macro_export]
macro_rules! port_contract_tests {
    ($make:path) => {
        $crate::port_contract_tests!(@each $make;
            request_insert_first_wins, enqueued_and_processing_marks, finalisation_lease_has_one_holder,
            finalise_succeeds_once_and_queues_the_webhook, rows_insert_skips_present_and_pages_in_order,
            settle_image_has_one_winner, counting_and_row_completion, progress_counters_are_exact,
            webhook_log_settles_once, reports_list_count_and_daily, sweep_finds_unfinished_and_stalled,
            another_tenants_request_is_invisible, tenants_quotas_lock_and_idempotency_keys);
    };
    (@each $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = $make(stringify!($name)).await;
                $crate::ports::contract::$name(store).await;
            }
        )*
    };
}

const T0: Timestamp = Timestamp::from_millis(1_764_072_000_000);

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_millis(T0.millis() + seconds * 1000)
}

fn tenant(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

/// A new request of the suite's tenant.
fn key() -> RequestKey {
    RequestKey::new(&tenant("acme"), &RequestId::new())
}

/// A running request of `images` images created at `created_at`, optionally with a webhook.
pub fn request(created_at: Timestamp, images: i64, webhook: bool) -> Request {
    Request {
        tenant: tenant("acme"),
        id: RequestId::new(),
        status: RequestStatus::Pending,
        source: Source::Api,
        created_at,
        completed_at: None,
        total_products: images,
        total_images: images,
        progress_shards: 2,
        succeeded_images: 0,
        failed_images: 0,
        input_csv: StoredObject { bucket: "uploads".into(), key: "uploads/x.csv".into() },
        output_csv_key: None,
        content_sha256: "abc".into(),
        enqueued_at: None,
        rejection: None,
        finalising_since: None,
        webhook: webhook.then(|| Webhook::waiting("https://hooks.example.com/imgpipe".into())),
    }
}

fn row(id: &RequestKey, serial_number: i64, images: usize) -> Row {
    let urls = (0..images).map(|i| format!("https://img.example.com/{serial_number}/{i}.jpg")).collect();
    Row::new(id, serial_number, format!("product {serial_number}"), urls, T0)
}

fn job(id: &RequestKey, serial_number: i64, index: u32) -> ImageJob {
    ImageJob {
        schema: ImageJob::SCHEMA,
        tenant: id.tenant.clone(),
        request_id: id.id.clone(),
        serial_number,
        index,
        url: ImageUrl::parse("https://img.example.com/a.jpg").unwrap(),
        shard: 0,
        also: Vec::new(),
    }
}

fn succeeded(n: usize) -> ImageResult {
    ImageResult::Succeeded { output_key: format!("outputs/k{n}.jpg"), output_url: format!("https://o/k{n}.jpg") }
}

fn finalisation(status: RequestStatus, at: Timestamp) -> Finalisation {
    let tally = Tally { settled: 3, failed: 1 };
    Finalisation { status, queue_webhook: false, tally, output_csv_key: "outputs/x/output.csv".into(), at }
}

fn finalisation_with_webhook(status: RequestStatus, at: Timestamp) -> Finalisation {
    Finalisation { queue_webhook: true, ..finalisation(status, at) }
}

/// How many of `results` are `true`.
fn winners(results: &[bool]) -> usize {
    results.iter().filter(|w| **w).count()
}

pub async fn request_insert_first_wins<S: DocumentStore>(store: Arc<S>) {
    let mut first = request(T0, 3, true);
    first.rejection = Some(Rejection {
        errors: vec![RowError { line: 2, column: "S. No.".into(), value: "x".into(), message: "bad".into() }],
        total: 7,
    });
    assert_eq!(store.insert_request(&first).await.unwrap(), None);
    let mut second = first.clone();
    second.content_sha256 = "other".into();
    second.total_images = 99;
    assert_eq!(store.insert_request(&second).await.unwrap(), Some(first.clone()), "the first insert wins");
    assert_eq!(store.get_request(&first.key()).await.unwrap(), Some(first));
    assert_eq!(store.get_request(&key()).await.unwrap(), None);
}

pub async fn enqueued_and_processing_marks<S: DocumentStore>(store: Arc<S>) {
    let r = request(T0, 3, false);
    store.insert_request(&r).await.unwrap();
    store.mark_enqueued(&r.key(), at(1)).await.unwrap();
    store.mark_enqueued(&r.key(), at(2)).await.unwrap();
    store.mark_processing(&r.key()).await.unwrap();
    let got = store.get_request(&r.key()).await.unwrap().unwrap();
    assert_eq!(got.enqueued_at, Some(at(1)), "the first mark wins");
    assert_eq!(got.status, RequestStatus::Processing);
    assert!(store.finalise(&r.key(), &finalisation(RequestStatus::Completed, at(3))).await.unwrap());
    store.mark_processing(&r.key()).await.unwrap();
    let got = store.get_request(&r.key()).await.unwrap().unwrap();
    assert_eq!(got.status, RequestStatus::Completed, "processing only from pending");
}

pub async fn finalisation_lease_has_one_holder<S: DocumentStore>(store: Arc<S>) {
    let lease = Duration::from_secs(60);
    let r = request(T0, 3, false);
    store.insert_request(&r).await.unwrap();
    let claims = join_all((0..8).map(|_| {
        let store = store.clone();
        let id = r.key();
        tokio::spawn(async move { store.claim_finalisation(&id, at(10), lease).await.unwrap() })
    }))
    .await;
    let claims: Vec<bool> = claims.into_iter().map(Result::unwrap).collect();
    assert_eq!(winners(&claims), 1, "exactly one of 8 concurrent claims wins: {claims:?}");
    assert!(!store.claim_finalisation(&r.key(), at(70), lease).await.unwrap(), "held until the lease expires");
    assert!(store.claim_finalisation(&r.key(), at(71), lease).await.unwrap(), "an expired lease can be taken");
    store.release_finalisation(&r.key()).await.unwrap();
    assert_eq!(store.get_request(&r.key()).await.unwrap().unwrap().finalising_since, None);
    assert!(store.claim_finalisation(&r.key(), at(72), lease).await.unwrap(), "a released lease can be taken at once");
    store.release_finalisation(&r.key()).await.unwrap();
    assert!(store.finalise(&r.key(), &finalisation(RequestStatus::Failed, at(73))).await.unwrap());
    assert!(!store.claim_finalisation(&r.key(), at(74), lease).await.unwrap(), "a final request has no lease");
}

pub async fn finalise_succeeds_once_and_queues_the_webhook<S: DocumentStore>(store: Arc<S>) {
    let hooked = request(T0, 3, true);
    let plain = request(T0, 3, false);
    store.insert_request(&hooked).await.unwrap();
    store.insert_request(&plain).await.unwrap();
    assert!(store.finalise(&plain.key(), &finalisation(RequestStatus::Processing, at(1))).await.is_err());
    let results = join_all((0..8).map(|i| {
        let store = store.clone();
        let id = hooked.key();
        let status = if i % 2 == 0 { RequestStatus::Failed } else { RequestStatus::Completed };
        let fin = finalisation_with_webhook(status, at(5));
        tokio::spawn(async move { (status, store.finalise(&id, &fin).await.unwrap()) })
    }))
    .await;
    let results: Vec<(RequestStatus, bool)> = results.into_iter().map(Result::unwrap).collect();
    let won: Vec<_> = results.iter().filter(|(_, won)| *won).collect();
    assert_eq!(won.len(), 1, "exactly one of 8 concurrent finalisations wins: {results:?}");
    let got = store.get_request(&hooked.key()).await.unwrap().unwrap();
    assert_eq!(got.status, won[0].0, "the winner's status is stored");
    assert_eq!((got.succeeded_images, got.failed_images), (2, 1));
    assert_eq!(got.completed_at, Some(at(5)));
    assert_eq!(got.output_csv_key.as_deref(), Some("outputs/x/output.csv"));
    assert_eq!(got.final_tally(), Some(Tally { settled: 3, failed: 1 }));
    let hook = got.webhook.unwrap();
    assert_eq!((hook.state, hook.queued_at, hook.last_activity_at), (WebhookState::Queued, Some(at(5)), Some(at(5))));
    assert!(store.finalise(&plain.key(), &finalisation(RequestStatus::Completed, at(6))).await.unwrap());
    let plain = store.get_request(&plain.key()).await.unwrap().unwrap();
    assert_eq!((plain.status, plain.webhook), (RequestStatus::Completed, None), "no webhook appears");
}

pub async fn rows_insert_skips_present_and_pages_in_order<S: DocumentStore>(store: Arc<S>) {
    let id = key();
    let other = key();
    store.insert_rows(&[row(&id, 3, 1), row(&id, 1, 2), row(&other, 2, 1)]).await.unwrap();
    let mut changed = row(&id, 1, 5);
    changed.product_name = "changed".into();
    store.insert_rows(&[changed, row(&id, 2, 1)]).await.unwrap();
    store.insert_rows(&[]).await.unwrap();
    let got = store.get_row(&id, 1).await.unwrap().unwrap();
    assert_eq!(got, row(&id, 1, 2), "a row already present is kept as it was");
    assert_eq!(got.images.len(), 2);
    assert!(got.images.iter().all(|s| s.state == ImageState::Pending && !s.counted));
    let serials = |rows: Vec<Row>| rows.iter().map(|r| r.serial_number).collect::<Vec<_>>();
    assert_eq!(serials(store.rows_page(&id, None, 10).await.unwrap()), [1, 2, 3]);
    assert_eq!(serials(store.rows_page(&id, None, 2).await.unwrap()), [1, 2]);
    assert_eq!(serials(store.rows_page(&id, Some(2), 10).await.unwrap()), [3]);
    assert_eq!(serials(store.rows_page(&id, Some(3), 10).await.unwrap()), Vec::<i64>::new());
    let streamed = |after| {
        let store = store.clone();
        let id = id.clone();
        async move { serials(store.rows_after(&id, after).await.unwrap().try_collect().await.unwrap()) }
    };
    assert_eq!(streamed(None).await, [1, 2, 3], "every row of the request, in serial order");
    assert_eq!(streamed(Some(1)).await, [2, 3]);
    assert_eq!(streamed(Some(3)).await, Vec::<i64>::new());
    assert_eq!(store.get_row(&id, 9).await.unwrap(), None);
}

pub async fn settle_image_has_one_winner<S: DocumentStore>(store: Arc<S>) {
    let id = key();
    store.insert_rows(&[row(&id, 1, 3)]).await.unwrap();
    // 8 deliveries of image 0 race, with different outcomes; images 1 and 2 are settled at the same time.
    let settles = join_all((0..10).map(|n| {
        let store = store.clone();
        let (index, result) = match n {
            8 => (1, succeeded(8)),
            9 => (2, ImageResult::Failed { reason: FailureReason::HttpStatus }),
            n if n % 2 == 0 => (0, succeeded(n)),
            _ => (0, ImageResult::Failed { reason: FailureReason::ALL[n % FailureReason::ALL.len()] }),
        };
        let job = job(&id, 1, index);
        tokio::spawn(async move { (n, store.settle_image(&job, &result).await.unwrap()) })
    }))
    .await;
    let settles: Vec<(usize, Option<Row>)> = settles.into_iter().map(Result::unwrap).collect();
    let image0: Vec<_> = settles.iter().filter(|(n, row)| *n < 8 && row.is_some()).collect();
    assert_eq!(image0.len(), 1, "exactly one of 8 concurrent settlements of one image wins");
    assert!(settles.iter().filter(|(n, _)| *n >= 8).all(|(_, row)| row.is_some()), "other images settle");
    let got = store.get_row(&id, 1).await.unwrap().unwrap();
    assert_eq!((got.settled_images, got.failed_images), (3, 1 + i64::from(image0[0].0 % 2 == 1)));
    assert!(got.is_settled());
    assert_eq!(got.images[1].output_key.as_deref(), Some("outputs/k8.jpg"));
    assert_eq!(got.images[2].reason, Some(FailureReason::HttpStatus));
    assert_eq!(got.images[2].error.as_deref(), Some(FailureReason::HttpStatus.message()));
    let winner = image0[0].0;
    let expected = if winner % 2 == 0 { ImageState::Succeeded } else { ImageState::Failed };
    assert_eq!(got.images[0].state, expected, "the winner's result is stored");
    // The row returned to the winner is the row after its change.
    let returned = image0[0].1.as_ref().unwrap();
    assert_eq!(returned.images[0].state, expected);
    assert!(store.settle_image(&job(&id, 1, 0), &succeeded(99)).await.unwrap().is_none(), "settled stays settled");
    assert!(store.settle_image(&job(&id, 1, 7), &succeeded(99)).await.unwrap().is_none(), "no such image");
    assert!(store.settle_image(&job(&id, 5, 0), &succeeded(99)).await.unwrap().is_none(), "no such row");
}

pub async fn counting_and_row_completion<S: DocumentStore>(store: Arc<S>) {
    let id = key();
    store.insert_rows(&[row(&id, 1, 2), row(&id, 2, 1)]).await.unwrap();
    assert_eq!(store.tally(&id).await.unwrap(), Tally::default());
    store.settle_image(&job(&id, 1, 1), &ImageResult::Failed { reason: FailureReason::TooLarge }).await.unwrap();
    store.settle_image(&job(&id, 2, 0), &succeeded(1)).await.unwrap();
    store.mark_counted(&job(&id, 1, 1)).await.unwrap();
    let got = store.get_row(&id, 1).await.unwrap().unwrap();
    assert_eq!(got.images.iter().map(|s| s.counted).collect::<Vec<_>>(), [false, true]);
    assert_eq!(store.tally(&id).await.unwrap(), Tally { settled: 2, failed: 1 });
    assert_eq!(store.tally(&key()).await.unwrap(), Tally::default());
    let urls = vec!["https://o/a.jpg".to_string()];
    store.complete_row(&id, 2, &urls, at(1)).await.unwrap();
    store.complete_row(&id, 2, &["later".to_string()], at(2)).await.unwrap();
    let got = store.get_row(&id, 2).await.unwrap().unwrap();
    assert_eq!((got.output_image_urls, got.completed_at), (urls, Some(at(1))), "the first completion wins");
}

pub async fn progress_counters_are_exact<S: DocumentStore>(store: Arc<S>) {
    let id = key();
    let shards = deal(&id, 41, 4);
    assert_eq!(shards.iter().map(|s| s.expected).collect::<Vec<_>>(), [11, 10, 10, 10]);
    store.insert_progress(&shards).await.unwrap();
    let mut again = shards.clone();
    again[0].expected = 99;
    store.insert_progress(&again).await.unwrap();
    let increments = join_all((0..40).map(|n| {
        let store = store.clone();
        let id = id.clone();
        tokio::spawn(async move { store.increment(&id, n % 2).await.unwrap().unwrap().done })
    }))
    .await;
    let mut seen: Vec<i64> = increments.into_iter().map(Result::unwrap).collect();
    seen.sort();
    let mut expected: Vec<i64> = (1..=20).chain(1..=20).collect();
    expected.sort();
    assert_eq!(seen, expected, "each increment returns a distinct count: none lost, none repeated");
    let all = store.all_progress(&id).await.unwrap();
    assert_eq!(
        all.iter().map(|s| (s.shard, s.expected, s.done)).collect::<Vec<_>>(),
        [(0, 11, 20), (1, 10, 20), (2, 10, 0), (3, 10, 0)]
    );
    assert_eq!(store.get_progress(&id, 1).await.unwrap().map(|s| s.done), Some(20));
    assert_eq!(store.increment(&id, 9).await.unwrap(), None);
    assert_eq!(store.get_progress(&key(), 0).await.unwrap(), None);
}

pub async fn webhook_log_settles_once<S: DocumentStore>(store: Arc<S>) {
    let r = request(T0, 1, true);
    store.insert_request(&r).await.unwrap();
    let attempt = |s: i64, status| WebhookAttempt { at: at(s), status, error: Some("HTTP 500".into()) };
    store.touch_delivery(&r.key(), at(1)).await.unwrap();
    assert!(!store.settle_delivery(&r.key(), WebhookState::Delivered, at(1)).await.unwrap(), "not queued yet");
    store.finalise(&r.key(), &finalisation_with_webhook(RequestStatus::Completed, at(2))).await.unwrap();
    store.record_attempt(&r.key(), &attempt(3, Some(500))).await.unwrap();
    store.record_attempt(&r.key(), &attempt(4, None)).await.unwrap();
    store.touch_delivery(&r.key(), at(5)).await.unwrap();
    let hook = store.get_request(&r.key()).await.unwrap().unwrap().webhook.unwrap();
    assert_eq!(hook.attempts, vec![attempt(3, Some(500)), attempt(4, None)]);
    assert_eq!(hook.last_activity_at, Some(at(5)));
    let settles = join_all((0..6).map(|n| {
        let store = store.clone();
        let id = r.key();
        let state = if n % 2 == 0 { WebhookState::Delivered } else { WebhookState::Failed };
        tokio::spawn(async move { store.settle_delivery(&id, state, at(6)).await.unwrap() })
    }))
    .await;
    let settles: Vec<bool> = settles.into_iter().map(Result::unwrap).collect();
    assert_eq!(winners(&settles), 1, "one of 6 concurrent settlements wins: {settles:?}");
    let hook = store.get_request(&r.key()).await.unwrap().unwrap().webhook.unwrap();
    assert!(hook.state.is_done());
    assert_eq!(hook.delivered_at, (hook.state == WebhookState::Delivered).then_some(at(6)));
    store.touch_delivery(&r.key(), at(9)).await.unwrap();
    let hook = store.get_request(&r.key()).await.unwrap().unwrap().webhook.unwrap();
    assert_eq!(hook.last_activity_at, Some(at(5)), "a settled delivery is not touched");
}

pub async fn reports_list_count_and_daily<S: DocumentStore>(store: Arc<S>) {
    let acme = Visible::Tenant(tenant("acme"));
    // Another tenant's request, completed on the same day: in no report of acme's, in the admin's.
    let mut foreign = request(at(5), 7, false);
    foreign.tenant = tenant("other");
    store.insert_request(&foreign).await.unwrap();
    store.finalise(&foreign.key(), &finalisation(RequestStatus::Completed, at(100))).await.unwrap();
    let mut made = Vec::new();
    for (n, status) in
        [RequestStatus::Pending, RequestStatus::Completed, RequestStatus::Failed, RequestStatus::Completed]
            .into_iter()
            .enumerate()
    {
        let r = request(at(n as i64 * 10), 3, false);
        store.insert_request(&r).await.unwrap();
        if status.is_final() {
            // Completed on two different days.
            let day = if n == 3 { 86_400 } else { 0 };
            store.finalise(&r.key(), &finalisation(status, at(100 + day))).await.unwrap();
        }
        made.push(r.id);
    }
    // Two requests at the same instant: the cursor orders them by id.
    let twin = request(at(30), 1, false);
    store.insert_request(&twin).await.unwrap();
    let ids = |rs: Vec<Request>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let all = ids(store.list_requests(&acme, &ListFilter::default(), None, 10).await.unwrap());
    let (a, b) = if twin.id.as_str() > made[3].as_str() { (&twin.id, &made[3]) } else { (&made[3], &twin.id) };
    assert_eq!(all, [a.clone(), b.clone(), made[2].clone(), made[1].clone(), made[0].clone()]);
    let page = ids(store.list_requests(&acme, &ListFilter::default(), Some((at(30), a.clone())), 2).await.unwrap());
    assert_eq!(page, [b.clone(), made[2].clone()], "the cursor resumes after (createdAt, requestId)");
    let completed = ListFilter { status: Some(RequestStatus::Completed), ..ListFilter::default() };
    assert_eq!(
        ids(store.list_requests(&acme, &completed, None, 10).await.unwrap()),
        [made[3].clone(), made[1].clone()]
    );
    let window = ListFilter { created_after: Some(at(10)), created_before: Some(at(30)), ..ListFilter::default() };
    assert_eq!(ids(store.list_requests(&acme, &window, None, 10).await.unwrap()), [made[2].clone(), made[1].clone()]);
    let mut counts = store.count_by_status(&acme).await.unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(counts, [(RequestStatus::Completed, 2), (RequestStatus::Failed, 1), (RequestStatus::Pending, 2)]);
    let days = store.daily_images(&acme, &at(0).day()).await.unwrap();
    let days: Vec<(String, i64, i64)> = days.into_iter().map(|d| (d.day, d.processed, d.failed)).collect();
    assert_eq!(days, [(at(0).day(), 6, 2), (at(86_400).day(), 3, 1)]);
    assert_eq!(store.daily_images(&acme, &at(86_400).day()).await.unwrap().len(), 1);
    let everyone = store.list_requests(&Visible::AllTenants, &ListFilter::default(), None, 10).await.unwrap();
    assert_eq!(everyone.len(), 6, "the admin's view holds every tenant's requests");
    assert!(everyone.iter().any(|r| r.id == foreign.id));
    let mut counts = store.count_by_status(&Visible::AllTenants).await.unwrap();
    counts.sort_by_key(|(s, _)| s.as_str());
    assert_eq!(counts, [(RequestStatus::Completed, 3), (RequestStatus::Failed, 1), (RequestStatus::Pending, 2)]);
    let days = store.daily_images(&Visible::AllTenants, &at(0).day()).await.unwrap();
    assert_eq!((days[0].processed, days[0].failed), (9, 3), "{days:?}");
    let others = Visible::Tenant(tenant("other"));
    assert_eq!(store.list_requests(&others, &ListFilter::default(), None, 10).await.unwrap().len(), 1);
}

/// The counters of `images` images dealt one job per image over `shards` counters.
fn deal(key: &RequestKey, images: i64, shards: i64) -> Vec<ProgressShard> {
    let jobs: Vec<ImageJob> =
        (0..images).map(|n| ImageJob { shard: (n % shards) as u32, ..job(key, n + 1, 0) }).collect();
    ProgressShard::for_jobs(key, &jobs, shards)
}

pub async fn another_tenants_request_is_invisible<S: DocumentStore>(store: Arc<S>) {
    let r = request(T0, 2, true);
    store.insert_request(&r).await.unwrap();
    store.insert_rows(&[row(&r.key(), 1, 2)]).await.unwrap();
    store.insert_progress(&deal(&r.key(), 2, 1)).await.unwrap();
    let theirs = RequestKey::new(&tenant("other"), &r.id);
    // The same request id under another tenant: nothing is found, and nothing written reaches the real request.
    assert_eq!(store.get_request(&theirs).await.unwrap(), None);
    assert_eq!(store.get_row(&theirs, 1).await.unwrap(), None);
    assert!(store.rows_page(&theirs, None, 10).await.unwrap().is_empty());
    assert!(store.rows_after(&theirs, None).await.unwrap().try_collect::<Vec<_>>().await.unwrap().is_empty());
    assert_eq!(store.tally(&theirs).await.unwrap(), Tally::default());
    assert!(store.all_progress(&theirs).await.unwrap().is_empty());
    let mut their_job = job(&r.key(), 1, 0);
    their_job.tenant = tenant("other");
    assert_eq!(store.settle_image(&their_job, &succeeded(1)).await.unwrap(), None);
    assert_eq!(store.increment(&theirs, 0).await.unwrap(), None);
    store.mark_processing(&theirs).await.unwrap();
    assert!(!store.claim_finalisation(&theirs, at(1), Duration::from_secs(60)).await.unwrap());
    assert!(!store.finalise(&theirs, &finalisation(RequestStatus::Completed, at(2))).await.unwrap());
    let got = store.get_request(&r.key()).await.unwrap().unwrap();
    assert_eq!((got.status, got.finalising_since), (RequestStatus::Pending, None));
    assert_eq!(store.tally(&r.key()).await.unwrap(), Tally::default());
    // A second request with the same id in another tenant is a request of its own.
    let mut twin = r.clone();
    twin.tenant = tenant("other");
    assert_eq!(store.insert_request(&twin).await.unwrap(), None);
    assert_eq!(store.get_request(&theirs).await.unwrap().map(|t| t.tenant), Some(tenant("other")));
}

pub async fn tenants_quotas_lock_and_idempotency_keys<S: DocumentStore>(store: Arc<S>) {
    let acme = tenant("acme");
    assert_eq!(store.get_tenant(&acme).await.unwrap(), None);
    assert!(store.register_tenant(&acme, at(0)).await.unwrap());
    assert!(!store.register_tenant(&acme, at(1)).await.unwrap(), "registered once");
    let got = store.get_tenant(&acme).await.unwrap().unwrap();
    assert_eq!((got.created_at, got.quotas), (at(0), QuotaOverrides::default()));
    let quotas =
        QuotaOverrides { max_open_requests: Some(3), max_queued_images: Some(40), ..QuotaOverrides::default() };
    store.set_quotas(&acme, &quotas, at(2)).await.unwrap();
    store.set_quotas(&tenant("fresh"), &quotas, at(2)).await.unwrap();
    assert_eq!(store.get_tenant(&acme).await.unwrap().unwrap().quotas, quotas);
    assert_eq!(store.get_tenant(&tenant("fresh")).await.unwrap().unwrap().quotas, quotas, "set on a new tenant");
    let fewer = QuotaOverrides { max_open_requests: Some(3), ..QuotaOverrides::default() };
    store.set_quotas(&acme, &fewer, at(3)).await.unwrap();
    assert_eq!(store.get_tenant(&acme).await.unwrap().unwrap().quotas, fewer, "None goes back to the default");

    // The upload lock: one holder among concurrent takers, until released or expired; unregistered tenants too.
    let lease = Duration::from_secs(30);
    for who in [acme.clone(), tenant("unregistered")] {
        let takes = join_all((0..6).map(|_| {
            let (store, who) = (store.clone(), who.clone());
            tokio::spawn(async move { store.lock_uploads(&who, at(10), lease).await.unwrap() })
        }))
        .await;
        let tokens: Vec<i64> = takes.into_iter().filter_map(Result::unwrap).collect();
        assert_eq!(tokens.len(), 1, "one of 6 concurrent takers holds {who}'s lock");
        assert_eq!(store.lock_uploads(&who, at(20), lease).await.unwrap(), None, "held until released");
        store.unlock_uploads(&who, tokens[0] + 1).await.unwrap();
        assert_eq!(store.lock_uploads(&who, at(20), lease).await.unwrap(), None, "another token releases nothing");
        store.unlock_uploads(&who, tokens[0]).await.unwrap();
        let again = store.lock_uploads(&who, at(21), lease).await.unwrap().expect("released");
        assert!(store.lock_uploads(&who, at(52), lease).await.unwrap().is_some(), "an expired lock can be taken");
        store.unlock_uploads(&who, again).await.unwrap();
    }

    // Usage: the tenant's requests not final, and their images.
    let mut open = Vec::new();
    for images in [3, 4, 5] {
        let r = request(at(0), images, false);
        store.insert_request(&r).await.unwrap();
        open.push(r);
    }
    let mut foreign = request(at(0), 100, false);
    foreign.tenant = tenant("other");
    store.insert_request(&foreign).await.unwrap();
    store.finalise(&open[2].key(), &finalisation(RequestStatus::Completed, at(5))).await.unwrap();
    assert_eq!(store.usage(&acme).await.unwrap(), Usage { open_requests: 2, queued_images: 7 });
    assert_eq!(store.usage(&tenant("nobody")).await.unwrap(), Usage::default());

    // Idempotency keys: the first request of a key wins, per tenant.
    let (first, second) = (RequestId::new(), RequestId::new());
    assert_eq!(store.find_idempotency_key(&acme, "h1").await.unwrap(), None);
    assert_eq!(store.claim_idempotency_key(&acme, "h1", &first).await.unwrap(), None);
    assert_eq!(store.claim_idempotency_key(&acme, "h1", &second).await.unwrap(), Some(first.clone()));
    assert_eq!(store.find_idempotency_key(&acme, "h1").await.unwrap(), Some(first.clone()));
    assert_eq!(store.claim_idempotency_key(&tenant("other"), "h1", &second).await.unwrap(), None, "per tenant");
    assert_eq!(store.find_idempotency_key(&tenant("other"), "h1").await.unwrap(), Some(second));
}

pub async fn sweep_finds_unfinished_and_stalled<S: DocumentStore>(store: Arc<S>) {
    let old: Vec<Request> = (0..3).map(|n| request(at(n), 1, true)).collect();
    for r in &old {
        store.insert_request(r).await.unwrap();
    }
    let young = request(at(100), 1, false);
    store.insert_request(&young).await.unwrap();
    store.finalise(&old[1].key(), &finalisation_with_webhook(RequestStatus::Completed, at(50))).await.unwrap();
    let ids = |rs: Vec<Request>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let unfinished = ids(store.unfinished_requests(at(100), None, 10).await.unwrap());
    assert_eq!(unfinished, [old[0].id.clone(), old[2].id.clone()], "not final, older than the cut, oldest first");
    let rest = ids(store.unfinished_requests(at(101), Some((old[0].created_at, old[0].id.clone())), 10).await.unwrap());
    assert_eq!(rest, [old[2].id.clone(), young.id.clone()], "paged by (createdAt, requestId)");
    assert_eq!(store.unfinished_requests(at(101), None, 1).await.unwrap().len(), 1);
    // old[1]'s delivery was queued at 50: stalled once quiet since before the cut; an attempt is activity.
    assert!(store.stalled_webhooks(at(50), 10).await.unwrap().is_empty());
    assert_eq!(ids(store.stalled_webhooks(at(51), 10).await.unwrap()), [old[1].id.clone()]);
    store.record_attempt(&old[1].key(), &WebhookAttempt { at: at(60), status: Some(500), error: None }).await.unwrap();
    assert!(store.stalled_webhooks(at(51), 10).await.unwrap().is_empty());
    store.settle_delivery(&old[1].key(), WebhookState::Delivered, at(70)).await.unwrap();
    assert!(store.stalled_webhooks(at(1000), 10).await.unwrap().is_empty(), "a delivered webhook is not stalled");
}
