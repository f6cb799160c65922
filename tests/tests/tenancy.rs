//! Tenancy against the local stack: one tenant sees nothing of another's (a foreign id answers byte for byte as
//! an unknown one), an admin sees every tenant, each quota holds when two uploads race for its last slot (and the
//! refused one writes nothing anywhere), and one URL in many rows is fetched once.

use std::time::Duration;

use imgpipe_core::auth::Scope;
use imgpipe_core::domain::{QuotaOverrides, Timestamp};
use imgpipe_tests::{Caller, ImageServer, Stack, jpeg, json_of, photo, request_id};
use lambda_http::Body;

const CSV_HEADER: &str = "S. No.,Product Name,Input Image Urls\n";

fn alice() -> Caller {
    Caller::new("alice", &[Scope::Upload, Scope::Read])
}

fn bob() -> Caller {
    Caller::new("bob", &[Scope::Upload, Scope::Read])
}

fn admin() -> Caller {
    Caller::new("ops", &[Scope::Admin])
}

fn upload_request(csv: &str, idempotency_key: Option<&str>) -> http::Request<Body> {
    let mut req = http::Request::builder().method("POST").uri("/uploads").header("content-type", "text/csv");
    if let Some(key) = idempotency_key {
        req = req.header("idempotency-key", key);
    }
    req.body(Body::from(csv.to_string())).unwrap()
}

async fn upload_as(stack: &Stack, caller: &Caller, csv: &str, key: Option<&str>) -> (u16, serde_json::Value) {
    json_of(stack.call_upload(caller, upload_request(csv, key)).await)
}

/// Status, the headers a client could tell apart, and the body of a GET.
async fn answer(stack: &Stack, caller: &Caller, path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let resp = stack.get_response(caller, path).await;
    let mut headers: Vec<(String, String)> =
        resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string())).collect();
    headers.sort();
    (resp.status().as_u16(), headers, resp.body().to_vec())
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_cannot_read_list_count_download_or_reuse_a_key_and_an_admin_sees_both() {
    let stack = Stack::new("tenancy-isolation").await;
    let images = ImageServer::start().await;
    let url = images.serve("/a.jpg", "image/jpeg", jpeg(&photo(64, 48, 1), 90));
    let csv = format!("{CSV_HEADER}1,Secret product,{url}\n");
    let (code, body) = upload_as(&stack, &alice(), &csv, Some("order-1")).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body).to_string();
    stack.drain(Duration::from_secs(60)).await;
    let stored = stack.stored_request(&id).await;
    assert_eq!(stored.get_str("status").unwrap(), "completed", "{stored:?}");
    assert_eq!(stored.get_str("tenantId").unwrap(), "alice");
    let outputs = stack.keys(&stack.app.config.outputs_bucket, "outputs/").await;
    assert!(!outputs.is_empty() && outputs.iter().all(|k| k.starts_with("outputs/alice/")), "{outputs:?}");

    // Alice reads her request; Bob gets, byte for byte, what an id nobody has gives.
    let b = bob();
    let paths = [format!("/requests/{id}"), format!("/status/{id}"), format!("/requests/{id}/output.csv")];
    let (code, _, own) = answer(&stack, &alice(), &paths[0]).await;
    assert_eq!(code, 200);
    assert_eq!(json(&own)["rows"][0]["productName"], "Secret product");
    let foreign: Vec<_> = futures::future::join_all(paths.iter().map(|p| answer(&stack, &b, p))).await;
    for ((code, _, body), path) in foreign.iter().zip(&paths) {
        assert_eq!(*code, 404, "{path}: {}", String::from_utf8_lossy(body));
        assert!(!String::from_utf8_lossy(body).contains("Secret"), "{path}");
    }
    // Bob's lists and counts hold nothing of Alice's.
    let (code, list) = stack.get_as(&bob(), "/requests").await;
    assert_eq!((code, json(&list)["requests"].as_array().map(Vec::len)), (200, Some(0)), "{}", json(&list));
    let (code, stats) = stack.get_as(&bob(), "/stats").await;
    let stats = json(&stats);
    assert_eq!(code, 200);
    let counted: i64 = stats["requestsByStatus"].as_object().unwrap().values().map(|v| v.as_i64().unwrap()).sum();
    let processed: i64 = stats["daily"].as_array().unwrap().iter().map(|d| d["processed"].as_i64().unwrap()).sum();
    assert_eq!((counted, processed), (0, 0), "{stats}");
    // Naming Alice is an admin's privilege.
    let (code, body) = stack.get_as(&bob(), "/requests?tenant=alice").await;
    assert_eq!((code, json(&body)["error"]["code"].as_str()), (403, Some("forbidden")));
    let (code, _) = stack.get_as(&bob(), &format!("/requests/{id}?tenant=alice")).await;
    assert_eq!(code, 403);

    // Bob's Idempotency-Key "order-1" is his own: a new request, not Alice's, and not a conflict with her file.
    let other_csv = format!("{CSV_HEADER}1,Bob's product,{url}\n");
    let (code, body) = upload_as(&stack, &bob(), &other_csv, Some("order-1")).await;
    assert_eq!(code, 202, "{body}");
    let bobs = request_id(&body).to_string();
    assert_ne!(bobs, id);
    let (code, body) = upload_as(&stack, &bob(), &csv, Some("order-2")).await;
    assert_eq!(code, 202, "the same file under another tenant is another request: {body}");
    assert_ne!(request_id(&body).to_string(), id);
    // Alice's retry with her key is still her request.
    let (code, body) = upload_as(&stack, &alice(), &csv, Some("order-1")).await;
    assert_eq!((code, request_id(&body).to_string()), (202, id.clone()), "{body}");

    // The admin sees both tenants, or one with ?tenant=, and reads Alice's request with ?tenant=alice.
    let (code, all) = stack.get_as(&admin(), "/requests?limit=500").await;
    assert_eq!(code, 200);
    let tenants: std::collections::BTreeSet<String> =
        json(&all)["requests"].as_array().unwrap().iter().map(|r| r["tenant"].as_str().unwrap().to_string()).collect();
    assert_eq!(tenants, ["alice", "bob"].map(String::from).into(), "{}", json(&all));
    let (_, only) = stack.get_as(&admin(), "/requests?tenant=alice").await;
    let only = json(&only);
    assert_eq!(only["requests"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only["requests"][0]["requestId"], id.as_str());
    let (code, _) = stack.get_as(&admin(), &format!("/requests/{id}?tenant=alice")).await;
    assert_eq!(code, 200);
    let (_, stats) = stack.get_as(&admin(), "/stats").await;
    assert_eq!(json(&stats)["requestsByStatus"]["completed"], 1, "{}", json(&stats));

    // "Exactly like an unknown id": with Alice's documents gone, Bob's answers do not change by a byte.
    for collection in ["Requests", "RequestData", "RequestProgress"] {
        let gone = stack.db.collection::<imgpipe_core::bson::Document>(collection);
        gone.delete_many(imgpipe_core::bson::doc! {"tenantId": "alice"}).await.unwrap();
    }
    let unknown: Vec<_> = futures::future::join_all(paths.iter().map(|p| answer(&stack, &b, p))).await;
    assert_eq!(foreign, unknown, "a foreign id answers exactly as an unknown one");
    let (code, _, _) = answer(&stack, &alice(), &paths[0]).await;
    assert_eq!(code, 404, "the documents were deleted");
}

/// Two uploads of `csv` by `caller` at once: their status codes and answers, sorted so that an accepted one is
/// first.
async fn race(stack: &Stack, caller: &Caller, csv: &str) -> Vec<http::Response<Body>> {
    let (a, b) = tokio::join!(
        stack.call_upload(caller, upload_request(csv, None)),
        stack.call_upload(caller, upload_request(csv, None))
    );
    let mut answers = vec![a, b];
    answers.sort_by_key(|r| r.status().as_u16());
    answers
}

/// One of two racing uploads passed the last slot of `limit`; the other is a 429 naming it with Retry-After, and
/// nothing of it is in MongoDB, S3 or SQS.
async fn exactly_one_passes(stack: &Stack, caller: &Caller, csv: &str, limit: &str, images_each: usize) {
    let documents_before = stack.requests().count_documents(imgpipe_core::bson::doc! {}).await.unwrap();
    let rows_before = stack.request_data().count_documents(imgpipe_core::bson::doc! {}).await.unwrap();
    let uploads_before = stack.keys(&stack.app.config.uploads_bucket, "uploads/").await.len();
    let queued_before = stack.queue_depth().await;
    let answers = race(stack, caller, csv).await;
    let codes: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(codes, [202, 429], "{limit}: exactly one of two racing uploads passes");
    let refused = &answers[1];
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("60"), "{limit}");
    assert_eq!(refused.headers().get("imgpipe-quota").and_then(|v| v.to_str().ok()), Some(limit));
    let body: serde_json::Value = serde_json::from_slice(refused.body()).unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains(limit), "{body}");
    // Only the accepted upload's documents, CSV and messages exist.
    let documents = stack.requests().count_documents(imgpipe_core::bson::doc! {}).await.unwrap();
    let rows = stack.request_data().count_documents(imgpipe_core::bson::doc! {}).await.unwrap();
    assert_eq!((documents - documents_before, rows - rows_before), (1, 1), "{limit}");
    assert_eq!(stack.keys(&stack.app.config.uploads_bucket, "uploads/").await.len() - uploads_before, 1, "{limit}");
    assert_eq!(stack.queue_depth().await - queued_before, images_each, "{limit}");
}

fn csv_of(images: usize, tag: &str) -> String {
    let urls: Vec<String> = (0..images).map(|i| format!("http://127.0.0.1:9/{tag}/{i}.jpg")).collect();
    format!("{CSV_HEADER}1,Product {tag},\"{}\"\n", urls.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_quota_lets_exactly_one_of_two_racing_uploads_take_its_last_slot() {
    let stack = Stack::new("tenancy-quotas").await;
    let set = |tenant: &'static str, quotas: QuotaOverrides| {
        let app = stack.app.clone();
        async move {
            let tenant = imgpipe_core::auth::TenantId::parse(tenant).unwrap();
            app.tenants.set_quotas(&tenant, &quotas, Timestamp::now()).await.unwrap();
        }
    };

    // max-open-requests: one open request allowed (nothing is worked, so requests stay open).
    set("open", QuotaOverrides { max_open_requests: Some(1), ..Default::default() }).await;
    let open = Caller::new("open", &[Scope::Upload]);
    exactly_one_passes(&stack, &open, &csv_of(1, "open"), "max-open-requests", 1).await;

    // max-queued-images: 5 images may be queued; 2 are, and each upload brings 3.
    set("queued", QuotaOverrides { max_queued_images: Some(5), ..Default::default() }).await;
    let queued = Caller::new("queued", &[Scope::Upload]);
    let (code, body) = upload_as(&stack, &queued, &csv_of(2, "queued-first"), None).await;
    assert_eq!(code, 202, "{body}");
    exactly_one_passes(&stack, &queued, &csv_of(3, "queued"), "max-queued-images", 3).await;

    // max-images-per-request, at its edge: 4 images pass, 5 do not, however many race.
    set("big", QuotaOverrides { max_images_per_request: Some(4), ..Default::default() }).await;
    let big = Caller::new("big", &[Scope::Upload]);
    let (code, body) = upload_as(&stack, &big, &csv_of(4, "big-edge"), None).await;
    assert_eq!(code, 202, "{body}");
    let answers = race(&stack, &big, &csv_of(5, "big-over")).await;
    assert_eq!(answers.iter().map(|r| r.status().as_u16()).collect::<Vec<_>>(), [429, 429]);
    assert_eq!(answers[0].headers().get("imgpipe-quota").unwrap(), "max-images-per-request");

    // A tenant without overrides has the deployment's defaults; the others are untouched by these limits.
    let (code, body) = upload_as(&stack, &Caller::new("free", &[Scope::Upload]), &csv_of(6, "free"), None).await;
    assert_eq!(code, 202, "{body}");
    // A presign is refused as well at the open-request quota, before any URL is signed.
    let presign = http::Request::builder()
        .method("POST")
        .uri("/uploads/presign")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"size": 100}"#))
        .unwrap();
    let (code, body) = json_of(stack.call_upload(&open, presign).await);
    assert_eq!((code, body["error"]["code"].as_str()), (429, Some("quota_exceeded")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_url_in_fifty_rows_is_fetched_once_and_fills_every_row() {
    let stack = Stack::new("tenancy-dedup").await;
    let images = ImageServer::start().await;
    let shared = images.serve("/shared.jpg", "image/jpeg", jpeg(&photo(80, 60, 2), 90));
    let own = images.serve("/own.jpg", "image/jpeg", jpeg(&photo(60, 80, 3), 90));
    // 50 rows with the shared URL; row 7 has it twice and another image between.
    let mut csv = CSV_HEADER.to_string();
    for r in 1..=50 {
        let urls = if r == 7 { format!("{shared},{own},{shared}") } else { shared.clone() };
        csv.push_str(&format!("{r},Product {r},\"{urls}\"\n"));
    }
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["totalImages"], 52, "every position counts: {body}");
    let id = request_id(&body).to_string();
    assert_eq!(stack.queue_depth().await, 2, "one message per distinct URL");
    stack.drain(Duration::from_secs(60)).await;
    assert_eq!((images.hits_of("/shared.jpg"), images.hits_of("/own.jpg")), (1, 1), "each URL fetched once");

    let stored = stack.stored_request(&id).await;
    assert_eq!(stored.get_str("status").unwrap(), "completed", "{stored:?}");
    let (code, status) = stack.status(&format!("{id}?limit=100")).await;
    assert_eq!(code, 200);
    let rows = status["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 50);
    let shared_output = rows[0]["outputImageUrls"][0].as_str().expect("row 1 has its output").to_string();
    for row in rows {
        let outputs = row["outputImageUrls"].as_array().unwrap();
        let inputs = row["inputImageUrls"].as_array().unwrap();
        assert_eq!(outputs.len(), inputs.len(), "{row}");
        for (input, output) in inputs.iter().zip(outputs) {
            let output = output.as_str().unwrap_or_else(|| panic!("every position has its output: {row}"));
            assert_eq!(input.as_str() == Some(shared.as_str()), output == shared_output, "{row}");
        }
    }
    assert_eq!(status["counts"]["succeeded"], 52, "{}", status["counts"]);
    let (code, csv) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!(csv.matches(&shared_output).count(), 51, "the shared output in every position: {csv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_file_belongs_to_the_tenant_of_its_prefix_and_an_unknown_tenant_is_skipped() {
    let stack = Stack::new("tenancy-drops").await;
    let bucket = stack.app.config.uploads_bucket.clone();
    let csv = csv_of(1, "dropped");
    let put = |key: &'static str| {
        let (s3, bucket, csv) = (stack.s3.clone(), bucket.clone(), csv.clone());
        async move {
            let out = s3.put_object().bucket(&bucket).key(key).body(csv.into_bytes().into()).send().await.unwrap();
            out.e_tag().unwrap_or_default().trim_matches('"').to_string()
        }
    };
    let known = imgpipe_core::auth::TenantId::parse("dropper").unwrap();
    stack.app.tenants.register_tenant(&known, Timestamp::now()).await.unwrap();
    let documents = || async { stack.requests().count_documents(imgpipe_core::bson::doc! {}).await.unwrap() };
    for key in ["incoming/stranger/list.csv", "incoming/list.csv", "incoming/Not_A_Tenant/list.csv"] {
        let etag = put(key).await;
        let out = imgpipe_upload::s3::handle_event(
            &stack.app,
            imgpipe_tests::s3_event(&bucket, key, &etag),
            Default::default(),
        )
        .await
        .expect("handled");
        assert_eq!(out["ingested"], 0, "{key}: skipped");
        assert_eq!(documents().await, 0, "{key}: no request");
        assert!(stack.object(&bucket, key).await.is_some(), "{key}: left in place");
    }
    let key = "incoming/dropper/list.csv";
    let etag = put(key).await;
    let out =
        imgpipe_upload::s3::handle_event(&stack.app, imgpipe_tests::s3_event(&bucket, key, &etag), Default::default())
            .await
            .expect("handled");
    assert_eq!(out["ingested"], 1);
    let stored = stack.requests().find_one(imgpipe_core::bson::doc! {}).await.unwrap().expect("a request");
    assert_eq!(stored.get_str("tenantId").unwrap(), "dropper");
    assert_eq!(stored.get_str("status").unwrap(), "pending", "{stored:?}");
}
