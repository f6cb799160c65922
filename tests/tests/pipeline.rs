//! End to end on the local stack: CSV → upload handler → SQS → worker handler → MongoDB/S3 → status handler.

use std::time::Duration;

use image::GenericImageView;
use imgpipe_core::bson::{Bson, Document, doc};
use imgpipe_tests::{ImageServer, Stack, jpeg, photo, png, request_id};

struct Input {
    url: String,
    bytes: Vec<u8>,
    dims: (u32, u32),
}

fn bson_type(d: &Document, key: &str) -> &'static str {
    match d.get(key) {
        Some(Bson::String(_)) => "string",
        Some(Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_)) => "number",
        Some(Bson::DateTime(_)) => "date",
        Some(Bson::Array(_)) => "array",
        Some(Bson::Document(_)) => "document",
        Some(Bson::Boolean(_)) => "bool",
        Some(_) => "other",
        None => "missing",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_in_compressed_jpegs_and_output_csv_out() {
    let stack = Stack::new("e2e").await;
    let server = ImageServer::start().await;

    // 3 rows, 6 images: JPEG q95 and PNG (one with alpha), various sizes.
    let mut inputs: Vec<Vec<Input>> = Vec::new();
    let specs: [&[(u32, u32, &str)]; 3] = [
        &[(640, 480, "jpg"), (300, 500, "png")],
        &[(800, 600, "jpg")],
        &[(256, 256, "png-alpha"), (1024, 768, "jpg"), (120, 90, "png")],
    ];
    for (r, row) in specs.iter().enumerate() {
        let mut row_inputs = Vec::new();
        for (i, &(w, h, kind)) in row.iter().enumerate() {
            let img = photo(w, h, (r * 10 + i) as u32);
            let (bytes, ct) = match kind {
                "jpg" => (jpeg(&img, 95), "image/jpeg"),
                "png" => (png(&image::DynamicImage::ImageRgb8(img)), "image/png"),
                _ => {
                    let rgba = image::DynamicImage::ImageRgb8(img).to_rgba8();
                    let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
                        let mut p = *rgba.get_pixel(x, y);
                        p[3] = if x < w / 2 { 0 } else { 255 };
                        p
                    });
                    (png(&image::DynamicImage::ImageRgba8(rgba)), "image/png")
                }
            };
            let url =
                server.serve(&format!("/img/{r}-{i}.{}", if kind == "jpg" { "jpg" } else { "png" }), ct, bytes.clone());
            row_inputs.push(Input { url, bytes, dims: (w, h) });
        }
        inputs.push(row_inputs);
    }
    let names = ["Plain shirt", "Shoe, \"red\"", "Hat"];
    let mut csv = String::from("S. No.,Product Name,Input Image Urls\n");
    for (r, row) in inputs.iter().enumerate() {
        let urls: Vec<&str> = row.iter().map(|i| i.url.as_str()).collect();
        csv.push_str(&format!("{},\"{}\",\"{}\"\n", r + 1, names[r].replace('"', "\"\""), urls.join(",")));
    }

    // Upload: 202 with the documented body.
    let (code, body) = stack.upload("text/csv", csv.clone()).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["statusUrl"], format!("/requests/{id}"));
    assert_eq!(body["totalProducts"], 3);
    assert_eq!(body["totalImages"], 6);

    // Documents: the seed's names and BSON types; the request starts pending.
    let request = stack.requests().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "pending");
    assert_eq!(bson_type(&request, "createdAt"), "date");
    let rows: Vec<Document> = {
        use futures::TryStreamExt;
        let cursor =
            stack.request_data().find(doc! {"requestId": id.as_str()}).sort(doc! {"serialNumber": 1}).await.unwrap();
        cursor.try_collect().await.unwrap()
    };
    assert_eq!(rows.len(), 3);
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(bson_type(row, "requestId"), "string");
        assert_eq!(bson_type(row, "serialNumber"), "number");
        assert_eq!(bson_type(row, "productName"), "string");
        assert_eq!(bson_type(row, "inputImageUrls"), "array");
        assert_eq!(bson_type(row, "outputImageUrls"), "array");
        assert_eq!(bson_type(row, "createdAt"), "date");
        assert_eq!(row.get_str("productName").unwrap(), names[r]);
        let urls: Vec<&str> = row.get_array("inputImageUrls").unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        assert_eq!(urls, inputs[r].iter().map(|i| i.url.as_str()).collect::<Vec<_>>());
    }
    // The input CSV is stored.
    let stored = stack.object(&stack.app.config.uploads_bucket, request.get_str("inputCsvKey").unwrap()).await;
    assert_eq!(stored.as_deref(), Some(csv.as_bytes()));

    // One message per image, processed by the worker handler.
    let processed = stack.drain(Duration::from_secs(60)).await;
    assert_eq!(processed.len(), 6);
    assert_eq!(server.hits(), 6);

    let request = stack.requests().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    assert_eq!(request.get_str("status").unwrap(), "completed", "{request:?}");
    assert_eq!(bson_type(&request, "completedAt"), "date");

    // Every output is a JPEG with the input's dimensions, smaller than the q95 input.
    let (code, status) = stack.status(id.as_str()).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["status"], "completed");
    assert_eq!(
        status["counts"],
        serde_json::json!({"products": 3, "images": 6, "processed": 6, "succeeded": 6, "failed": 0})
    );
    assert_eq!(status["percentComplete"], 100.0);
    assert!(status["completedAt"].is_string());
    let rows_after: Vec<Document> = {
        use futures::TryStreamExt;
        let cursor =
            stack.request_data().find(doc! {"requestId": id.as_str()}).sort(doc! {"serialNumber": 1}).await.unwrap();
        cursor.try_collect().await.unwrap()
    };
    let http = reqwest::Client::new();
    for (r, row) in inputs.iter().enumerate() {
        let doc = &rows_after[r];
        assert_eq!(bson_type(doc, "completedAt"), "date");
        let stored_urls: Vec<&str> =
            doc.get_array("outputImageUrls").unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        assert_eq!(stored_urls.len(), row.len());
        for (i, input) in row.iter().enumerate() {
            let key = format!("outputs/tests/{id}/{}-{i}.jpg", r + 1);
            assert!(stored_urls[i].ends_with(&key), "{} vs {key}", stored_urls[i]);
            let out = stack.object(&stack.app.config.outputs_bucket, &key).await.expect("output object");
            assert_eq!(image::guess_format(&out).unwrap(), image::ImageFormat::Jpeg);
            let decoded = image::load_from_memory(&out).unwrap();
            assert_eq!(decoded.dimensions(), input.dims);
            let q95 = jpeg(&image::load_from_memory(&input.bytes).unwrap().to_rgb8(), 95);
            assert!(out.len() < q95.len(), "output {} bytes, q95 input {} bytes", out.len(), q95.len());
            // The status API's URL for this image downloads the same JPEG.
            let url = status["rows"][r]["outputImageUrls"][i].as_str().expect("output URL");
            let downloaded = http.get(url).send().await.unwrap();
            assert_eq!(downloaded.status(), 200, "{url}");
            assert_eq!(downloaded.bytes().await.unwrap().as_ref(), out.as_slice());
        }
    }

    // The output CSV keeps row order, serials and names, and lists output URLs in input order.
    let (code, csv_out) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        ["S. No.", "Product Name", "Input Image Urls", "Output Image Urls", "Errors"]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    for (r, rec) in records.iter().enumerate() {
        assert_eq!(&rec[0], (r + 1).to_string());
        assert_eq!(&rec[1], names[r]);
        assert_eq!(rec[2].split(',').collect::<Vec<_>>(), inputs[r].iter().map(|i| i.url.as_str()).collect::<Vec<_>>());
        let outs: Vec<&str> = rec[3].split(',').collect();
        assert_eq!(outs.len(), inputs[r].len());
        for (i, out) in outs.iter().enumerate() {
            // a presigned URL of the compressed image, which downloads
            let path = out.split('?').next().unwrap();
            assert!(path.ends_with(&format!("outputs/tests/{id}/{}-{i}.jpg", r + 1)), "{out}");
            let got = http.get(*out).send().await.unwrap();
            assert_eq!(got.status(), 200, "{out}");
            assert_eq!(image::guess_format(&got.bytes().await.unwrap()).unwrap(), image::ImageFormat::Jpeg);
        }
        assert_eq!(&rec[4], "");
    }
    assert_eq!(status["outputCsvUrl"], format!("/requests/{id}/output.csv"));
    // The stored CSV (what the webhook links to) has the canonical URLs of the same objects.
    let stored =
        stack.object(&stack.app.config.outputs_bucket, &format!("outputs/tests/{id}/output.csv")).await.unwrap();
    let stored = String::from_utf8(stored).unwrap();
    assert!(stored.contains(&format!("/outputs/tests/{id}/1-0.jpg,")), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_message_does_not_change_counts() {
    let stack = Stack::new("redeliver").await;
    let server = ImageServer::start().await;
    let a = server.serve("/a.jpg", "image/jpeg", jpeg(&photo(200, 100, 1), 95));
    let b = server.serve("/b.png", "image/png", png(&image::DynamicImage::ImageRgb8(photo(64, 64, 2))));
    let (code, body) =
        stack.upload("text/csv", format!("S. No.,Product Name,Input Image Urls\n1,A,\"{a},{b}\"\n")).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    let bodies = stack.drain(Duration::from_secs(30)).await;
    assert_eq!(bodies.len(), 2);
    assert_eq!(stack.stored_request(id.as_str()).await.get_str("status").unwrap(), "completed");
    let (_, before) = stack.status(id.as_str()).await;
    assert_eq!(before["status"], "completed");
    let request_before = stack.requests().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    let csv_key = format!("outputs/tests/{id}/output.csv");
    let csv_before = stack.object(&stack.app.config.outputs_bucket, &csv_key).await.expect("output CSV");
    assert_eq!(stack.puts_of(&csv_key), 1);

    // Deliver the first image's message again, as SQS may.
    stack.sqs.send_message().queue_url(&stack.app.config.queue_url).message_body(&bodies[0]).send().await.unwrap();
    let again = stack.drain(Duration::from_secs(30)).await;
    assert_eq!(again, vec![bodies[0].clone()], "the redelivered message is consumed, not retried");
    assert_eq!(server.hits(), 2, "an already settled image is not fetched again");

    let (_, after) = stack.status(id.as_str()).await;
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(after["status"], "completed");
    assert_eq!(after["completedAt"], before["completedAt"]);
    let request_after = stack.requests().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    for field in ["succeededImages", "failedImages", "status", "completedAt"] {
        assert_eq!(request_after.get(field), request_before.get(field), "{field}");
    }
    let row = stack.request_data().find_one(doc! {"requestId": id.as_str()}).await.unwrap().unwrap();
    assert_eq!(row.get_i64("settledImages").unwrap(), 2);
    assert_eq!(stack.object(&stack.app.config.outputs_bucket, &csv_key).await.unwrap(), csv_before);
    assert_eq!(stack.puts_of(&csv_key), 1, "the redelivery did not finalise again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_image_fails_only_itself_and_is_recorded_with_its_reason() {
    let stack = Stack::new("badimage").await;
    let server = ImageServer::start().await;
    let good = server.serve("/good.jpg", "image/jpeg", jpeg(&photo(120, 80, 7), 95));
    let missing = server.serve_status("/missing.jpg", 404, "text/plain", b"nope".to_vec());
    let html = server.serve("/page.jpg", "image/jpeg", b"<!DOCTYPE html><html><body>login</body></html>".to_vec());
    let csv = format!("S. No.,Product Name,Input Image Urls\n1,A,\"{good},{missing},{html}\"\n2,B,{good}\n");
    let (code, body) = stack.upload("text/csv", csv).await;
    assert_eq!(code, 202, "{body}");
    let id = request_id(&body);
    let processed = stack.drain(Duration::from_secs(30)).await;
    // One message per distinct URL (the good image is in both rows), each consumed once.
    assert_eq!(processed.len(), 3, "permanent failures are consumed, not retried");
    assert_eq!(server.hits_of("/good.jpg"), 1, "the good image is fetched once for both rows");
    assert_eq!(stack.stored_request(id.as_str()).await.get_str("status").unwrap(), "failed");

    let (_, status) = stack.status(id.as_str()).await;
    assert_eq!(status["status"], "failed");
    assert_eq!(
        status["counts"],
        serde_json::json!({"products": 2, "images": 4, "processed": 4, "succeeded": 2, "failed": 2})
    );
    let row = &status["rows"][0];
    assert!(row["outputImageUrls"][0].is_string());
    assert!(row["outputImageUrls"][1].is_null());
    assert!(row["outputImageUrls"][2].is_null());
    assert_eq!(row["images"][1]["state"], "failed");
    assert_eq!(row["images"][1]["reason"], "http_status", "{row}");
    assert_eq!(row["images"][2]["reason"], "unsupported_format", "{row}");
    assert!(status["rows"][1]["outputImageUrls"][0].is_string());

    let (code, csv_out) = stack.get(&format!("/requests/{id}/output.csv")).await;
    assert_eq!(code, 200);
    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    let rec = reader.records().next().unwrap().unwrap();
    let outs: Vec<&str> = rec[3].split(',').collect();
    assert_eq!(outs.len(), 3, "output URLs stay aligned with the inputs");
    assert!(outs[0].split('?').next().unwrap().ends_with(&format!("outputs/tests/{id}/1-0.jpg")));
    assert_eq!((outs[1], outs[2]), ("", ""));
    use imgpipe_core::failure::FailureReason::{HttpStatus, UnsupportedFormat};
    assert_eq!(&rec[4], format!("image 2: {}; image 3: {}", HttpStatus.message(), UnsupportedFormat.message()));
}
