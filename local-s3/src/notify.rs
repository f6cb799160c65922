//! Bucket notifications to SQS queues, as S3 sends them: `PutBucketNotificationConfiguration` checks that each
//! queue exists and sends it an `s3:TestEvent`; then every matching object creation sends one event record (key
//! URL-encoded, size, ETag, sequencer). Configurations live in memory, like the objects' lifetime on this stack
//! (`start.sh` starts the server empty), and are set again by whoever provisions the bucket.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use s3s::dto::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter, QueueConfiguration,
    S3KeyFilter, Timestamp, TimestampFormat,
};
use s3s::{S3Error, S3ErrorCode, S3Result};

/// One queue configuration of a bucket, with its queue's URL resolved.
#[derive(Clone)]
struct Target {
    id: String,
    queue_arn: String,
    queue_url: String,
    events: Vec<String>,
    prefix: String,
    suffix: String,
}

impl Target {
    /// Whether `event_name` (e.g. `ObjectCreated:Put`) on `key` is one this configuration asked for.
    fn matches(&self, event_name: &str, key: &str) -> bool {
        let event = format!("s3:{event_name}");
        let wanted = self
            .events
            .iter()
            .any(|e| e == &event || e.strip_suffix('*').is_some_and(|family| event.starts_with(family)));
        wanted && key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
    }

    fn configuration(&self) -> QueueConfiguration {
        let rule = |name: &'static str, value: &str| FilterRule {
            name: Some(FilterRuleName::from_static(name)),
            value: Some(value.to_string()),
        };
        let mut rules = Vec::new();
        if !self.prefix.is_empty() {
            rules.push(rule(FilterRuleName::PREFIX, &self.prefix));
        }
        if !self.suffix.is_empty() {
            rules.push(rule(FilterRuleName::SUFFIX, &self.suffix));
        }
        QueueConfiguration {
            events: self.events.iter().cloned().map(Event::from).collect(),
            filter: (!rules.is_empty())
                .then_some(NotificationConfigurationFilter { key: Some(S3KeyFilter { filter_rules: Some(rules) }) }),
            id: Some(self.id.clone()),
            queue_arn: self.queue_arn.clone(),
        }
    }
}

/// What an event record says about the object.
pub struct Created<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// `ObjectCreated:Put`, `ObjectCreated:Copy` or `ObjectCreated:CompleteMultipartUpload`.
    pub event_name: &'a str,
    pub size: i64,
    /// Without quotes, as events carry it.
    pub etag: String,
    pub principal: String,
}

pub struct Notifier {
    sqs: aws_sdk_sqs::Client,
    region: String,
    buckets: RwLock<HashMap<String, Vec<Target>>>,
    sequencer: AtomicU64,
}

fn invalid(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::InvalidArgument, message)
}

/// `2026-12-01T12:00:00.000Z`, as event times are written.
fn now() -> String {
    let mut out = Vec::new();
    let _ = Timestamp::from(std::time::SystemTime::now()).format(TimestampFormat::DateTime, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// An object key as S3 writes it into events: URL-encoded as a form value (a space is `+`), slashes kept.
pub fn event_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>().replace("%2F", "/")
}

impl Notifier {
    pub fn new(sqs: aws_sdk_sqs::Client, region: String) -> Self {
        Self { sqs, region, buckets: RwLock::default(), sequencer: AtomicU64::new(1) }
    }

    /// The queue URL of an SQS ARN (`arn:aws:sqs:REGION:ACCOUNT:NAME`), asked of the SQS server.
    async fn queue_url(&self, arn: &str) -> S3Result<String> {
        let parts: Vec<&str> = arn.split(':').collect();
        let [_, _, "sqs", _, account, name] = parts[..] else {
            return Err(invalid(format!("{arn} is not an SQS queue ARN (only queue destinations are supported)")));
        };
        let out = self.sqs.get_queue_url().queue_name(name).queue_owner_aws_account_id(account).send().await;
        out.ok()
            .and_then(|o| o.queue_url)
            .ok_or_else(|| invalid(format!("Unable to validate the following destination configurations: {arn}")))
    }

    async fn send(&self, queue_url: &str, body: String) -> S3Result<()> {
        self.sqs.send_message().queue_url(queue_url).message_body(body).send().await.map(drop).map_err(|e| {
            let e = aws_sdk_sqs::error::DisplayErrorContext(e);
            S3Error::with_message(S3ErrorCode::InternalError, format!("sending to {queue_url}: {e}"))
        })
    }

    /// Replaces `bucket`'s configuration (an empty one turns notifications off). Only queue destinations.
    pub async fn configure(&self, bucket: &str, config: NotificationConfiguration) -> S3Result<()> {
        if config.topic_configurations.is_some_and(|t| !t.is_empty())
            || config.lambda_function_configurations.is_some_and(|l| !l.is_empty())
            || config.event_bridge_configuration.is_some()
        {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "this server delivers notifications to SQS queues only",
            ));
        }
        let mut targets = Vec::new();
        for (i, queue) in config.queue_configurations.unwrap_or_default().into_iter().enumerate() {
            let rules = queue.filter.and_then(|f| f.key).and_then(|k| k.filter_rules).unwrap_or_default();
            let rule = |name: &str| {
                rules.iter().find(|r| r.name.as_ref().is_some_and(|n| n.as_str().eq_ignore_ascii_case(name)))
            };
            let value = |name: &str| rule(name).and_then(|r| r.value.clone()).unwrap_or_default();
            targets.push(Target {
                id: queue.id.unwrap_or_else(|| format!("notification-{}", i + 1)),
                queue_url: self.queue_url(&queue.queue_arn).await?,
                queue_arn: queue.queue_arn,
                events: queue.events.into_iter().map(String::from).collect(),
                prefix: value(FilterRuleName::PREFIX),
                suffix: value(FilterRuleName::SUFFIX),
            });
        }
        for target in &targets {
            let test = serde_json::json!({
                "Service": "Amazon S3", "Event": "s3:TestEvent", "Time": now(), "Bucket": bucket,
                "RequestId": self.next_sequencer(), "HostId": "imgpipe-local-s3",
            });
            self.send(&target.queue_url, test.to_string()).await?;
        }
        tracing::info!(bucket, queues = targets.len(), "notification configuration set");
        self.buckets.write().unwrap_or_else(|e| e.into_inner()).insert(bucket.to_string(), targets);
        Ok(())
    }

    pub fn configuration(&self, bucket: &str) -> NotificationConfiguration {
        let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
        let queues: Vec<QueueConfiguration> =
            buckets.get(bucket).into_iter().flatten().map(Target::configuration).collect();
        NotificationConfiguration { queue_configurations: (!queues.is_empty()).then_some(queues), ..Default::default() }
    }

    pub fn forget(&self, bucket: &str) {
        self.buckets.write().unwrap_or_else(|e| e.into_inner()).remove(bucket);
    }

    fn next_sequencer(&self) -> String {
        format!("{:016X}", self.sequencer.fetch_add(1, Ordering::Relaxed))
    }

    /// Sends the event of a created object to every queue configured for it, before the write is answered (so a
    /// client that saw its PUT succeed can count on the event being queued). A failed send is logged: the object
    /// stays written, as on S3, whose delivery is not part of the write either.
    pub async fn created(&self, object: Created<'_>) {
        let targets: Vec<Target> = {
            let buckets = self.buckets.read().unwrap_or_else(|e| e.into_inner());
            let all = buckets.get(object.bucket).into_iter().flatten();
            all.filter(|t| t.matches(object.event_name, object.key)).cloned().collect()
        };
        for target in targets {
            let sequencer = self.next_sequencer();
            let record = serde_json::json!({
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": self.region,
                "eventTime": now(),
                "eventName": object.event_name,
                "userIdentity": {"principalId": format!("AWS:{}", object.principal)},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {"x-amz-request-id": sequencer, "x-amz-id-2": "imgpipe-local-s3"},
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": target.id,
                    "bucket": {
                        "name": object.bucket,
                        "ownerIdentity": {"principalId": object.principal},
                        "arn": format!("arn:aws:s3:::{}", object.bucket),
                    },
                    "object": {"key": event_key(object.key), "size": object.size, "eTag": object.etag, "sequencer": sequencer},
                },
            });
            let body = serde_json::json!({ "Records": [record] }).to_string();
            match self.send(&target.queue_url, body).await {
                Ok(()) => {
                    tracing::info!(bucket = object.bucket, key = object.key, queue = target.queue_arn, "event sent")
                }
                Err(e) => tracing::error!(bucket = object.bucket, key = object.key, error = %e, "event not sent"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(events: &[&str], prefix: &str, suffix: &str) -> Target {
        Target {
            id: "t".into(),
            queue_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
            queue_url: "http://127.0.0.1:9324/000000000000/q".into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            prefix: prefix.into(),
            suffix: suffix.into(),
        }
    }

    #[test]
    fn events_and_key_filters_match_as_on_s3() {
        let t = target(&["s3:ObjectCreated:*"], "incoming/", ".csv");
        assert!(t.matches("ObjectCreated:Put", "incoming/a/b.csv"));
        assert!(t.matches("ObjectCreated:CompleteMultipartUpload", "incoming/b.csv"));
        assert!(!t.matches("ObjectCreated:Put", "outgoing/b.csv"));
        assert!(!t.matches("ObjectCreated:Put", "incoming/b.txt"));
        assert!(!t.matches("ObjectRemoved:Delete", "incoming/b.csv"));
        let put_only = target(&["s3:ObjectCreated:Put"], "", "");
        assert!(put_only.matches("ObjectCreated:Put", "x"));
        assert!(!put_only.matches("ObjectCreated:Copy", "x"));
    }

    #[test]
    fn event_keys_are_form_encoded_with_slashes_kept() {
        assert_eq!(event_key("incoming/t/my products, 2.csv"), "incoming/t/my+products%2C+2.csv");
        assert_eq!(event_key("incoming/ü+x.csv"), "incoming/%C3%BC%2Bx.csv");
    }
}
