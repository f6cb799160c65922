//! The HTTP edge of the upload and status functions: errors, content types, and nothing written on rejection.

use imgpipe_core::bson::doc;
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, request_id};

async fn assert_nothing_written(stack: &Stack) {
    assert_eq!(stack.requests().count_documents(doc! {}).await.unwrap(), 0, "Requests written");
    assert_eq!(stack.request_data().count_documents(doc! {}).await.unwrap(), 0, "RequestData written");
    assert_eq!(stack.keys(&stack.app.config.uploads_bucket, "").await, Vec::<String>::new(), "CSV stored");
    assert_eq!(stack.queue_depth().await, 0, "messages sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_csv_gets_400_listing_every_bad_row_and_writes_nothing() {
    let stack = Stack::new("badcsv").await;
    let csv = "S. No.,Product Name,Input Image Urls\n\
               1,Good,https://img.example/1.jpg\n\
               two,Bad serial,https://img.example/2.jpg\n\
               3,,https://img.example/3.jpg\n\
               4,Bad url,notaurl\n";
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_csv");
    assert_eq!(body["error"]["total"], 3);
    let details: Vec<(u64, &str)> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["line"].as_u64().unwrap(), d["column"].as_str().unwrap()))
        .collect();
    assert_eq!(details, [(3, "S. No."), (4, "Product Name"), (5, "Input Image Urls")]);
    assert_eq!(body["error"]["details"][2]["value"], "notaurl");
    assert_nothing_written(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415_and_oversize_is_413() {
    let stack = Stack::with("ctype", |c| c.max_csv_bytes = 200).await;
    let (code, body) = stack.upload("application/json", "{}").await;
    assert_eq!(code, 415, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
    let mut big = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in 1..20 {
        big.push_str(&format!("{i},P,https://img.example/{i}.jpg\n"));
    }
    let (code, body) = stack.upload("text/csv", big).await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_nothing_written(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_with_a_file_field_is_accepted() {
    let stack = Stack::new("multipart").await;
    let server = ImageServer::start().await;
    let url = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(32, 32, 1), 90));
    let csv = format!("S. No.,Product Name,Input Image Urls\n1,A,{url}\n");
    let boundary = "XyZ123";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n\
         --{boundary}--\r\n"
    );
    let (code, resp) = stack.upload(&format!("multipart/form-data; boundary={boundary}"), body).await;
    assert_eq!(code, 202, "{resp}");
    assert_eq!((resp["totalProducts"].as_u64(), resp["totalImages"].as_u64()), (Some(1), Some(1)));
    let id = request_id(&resp);
    let stored = stack.object(&stack.app.config.uploads_bucket, &format!("uploads/tests/{id}.csv")).await;
    assert_eq!(stored.as_deref(), Some(csv.as_bytes()), "the file field, not the whole form, is stored");

    let (code, resp) =
        stack.upload(&format!("multipart/form-data; boundary={boundary}"), format!("--{boundary}--\r\n")).await;
    assert_eq!(code, 400, "{resp}");
    assert!(resp["error"]["message"].as_str().unwrap().contains("`file`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_errors_share_one_shape() {
    let stack = Stack::new("statuserr").await;
    let (code, body) = stack.status("not-a-uuid").await;
    assert_eq!(code, 400);
    assert_eq!(body["error"]["code"], "invalid_request_id");
    let unknown = "0192f5e4-7a39-7c1e-9f55-2b1d0c3e4a5b";
    for path in
        [format!("/requests/{unknown}"), format!("/status/{unknown}"), format!("/requests/{unknown}/output.csv")]
    {
        let (code, body) = stack.get(&path).await;
        assert_eq!(code, 404, "{path}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
        assert!(body["error"]["message"].as_str().unwrap().contains(unknown));
    }
    let (code, _) = stack.get("/nowhere").await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_csv_is_409_while_running_and_rows_page_in_serial_order() {
    let stack = Stack::new("paging").await;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for i in (1..=7).rev() {
        csv.push_str(&format!("{i},P{i},http://127.0.0.1:9/{i}.jpg\n"));
    }
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    let (code, body) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));

    let mut serials = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/requests/{id}?limit=3&cursor={c}"),
            None => format!("/requests/{id}?limit=3"),
        };
        let (code, body) = stack.get(&path).await;
        assert_eq!(code, 200);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "pending");
        assert_eq!(body["counts"]["processed"], 0);
        serials.extend(body["rows"].as_array().unwrap().iter().map(|r| r["serialNumber"].as_i64().unwrap()));
        assert!(serials.len() <= 7, "the pages repeat rows: {serials:?}");
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(serials, [1, 2, 3, 4, 5, 6, 7]);
    let (code, _) = stack.get(&format!("/requests/{id}?limit=0")).await;
    assert_eq!(code, 400);
    let (code, _) = stack.get(&format!("/requests/{id}?cursor=bogus")).await;
    assert_eq!(code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_pending_then_processing_then_completed() {
    let stack = Stack::new("lifecycle").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(40, 30, 1), 90));
    let b = server.serve("/b.jpg", "image/jpeg", jpeg(&photo(30, 40, 2), 90));
    let (code, body) =
        stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,\"{a},{b}\"\n")).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    let (_, status) = stack.status(id.as_str()).await;
    assert_eq!((status["status"].as_str(), status["percentComplete"].as_f64()), (Some("pending"), Some(0.0)));
    assert!(status["completedAt"].is_null() && status["outputCsvUrl"].is_null());

    let messages = stack.take_messages(2).await;
    stack.work(&messages[..1]).await;
    let (_, status) = stack.status(id.as_str()).await;
    assert_eq!(status["status"], "processing");
    assert_eq!(status["counts"]["processed"], 1);
    assert_eq!(status["percentComplete"], 50.0);
    let (code, _) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 409, "no output CSV while processing");

    stack.work(&messages[1..]).await;
    // The worker of the last image completed the request (read before any status call).
    assert_eq!(stack.stored_request(id.as_str()).await.get_str("status").unwrap(), "completed");
    let (_, status) = stack.status(id.as_str()).await;
    assert_eq!(status["status"], "completed");
    assert_eq!(status["percentComplete"], 100.0);
    assert_eq!(status["outputCsvUrl"], format!("/requests/{id}/output.csv"));
    let (code, _) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    // the alias answers the same
    let (code, alias) = stack.get(&format!("/status/{id}")).await;
    assert_eq!(code, 200);
    let alias: serde_json::Value = serde_json::from_slice(&alias).unwrap();
    assert_eq!(alias["counts"], status["counts"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_every_page_of_250_rows_returns_each_row_once_in_serial_order() {
    let stack = Stack::new("walk250").await;
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    // serials out of order and with gaps, as real files have them
    let mut serials: Vec<i64> = (1..=250).map(|i| i * 3 + (i % 7)).collect();
    serials.reverse();
    for s in &serials {
        csv.push_str(&format!("{s},P{s},http://127.0.0.1:9/{s}.jpg\n"));
    }
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/requests/{id}?limit=40&cursor={c}"),
            None => format!("/requests/{id}?limit=40"),
        };
        let (code, body) = stack.get(&path).await;
        assert_eq!(code, 200);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        pages += 1;
        assert!(pages <= 7, "more than 7 pages of 40 for 250 rows");
        let rows = body["rows"].as_array().unwrap();
        assert!(rows.len() <= 40);
        for r in rows {
            assert_eq!(r["productName"], format!("P{}", r["serialNumber"]));
            seen.push(r["serialNumber"].as_i64().unwrap());
        }
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    serials.sort();
    assert_eq!(seen, serials, "every row once, in serial order");
    assert_eq!(pages, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_base_url_output_urls_are_under_it_and_not_presigned() {
    let stack = Stack::with("cdn", |c| c.output_base_url = Some("https://cdn.example.com/imgs/".into())).await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(40, 30, 1), 90));
    let (_, body) = stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,{a}\n")).await;
    let id = request_id(&body);
    stack.drain(std::time::Duration::from_secs(30)).await;
    let expected = format!("https://cdn.example.com/imgs/outputs/tests/{id}/1-0.jpg");
    let (_, status) = stack.status(id.as_str()).await;
    assert_eq!(status["rows"][0]["outputImageUrls"][0], expected.as_str());
    let (code, csv) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.contains(&format!(",{expected},")), "{csv}");
    let row = stack.request_data().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    assert_eq!(row.get_array("outputImageUrls").unwrap()[0].as_str(), Some(expected.as_str()));
}
