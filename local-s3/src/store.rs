//! The S3 operations: s3s-fs's own, plus what the project relies on and s3s-fs lacks: `If-Match` on GET and
//! HEAD (the S3-drop path reads a dropped file only while it is the one of its event), and bucket notifications
//! after object creation (see [`crate::notify`]). Operations not listed here answer `NotImplemented`.

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use s3s_fs::FileSystem;

use crate::notify::{Created, Notifier};

pub struct LocalS3 {
    pub fs: FileSystem,
    pub notifier: Notifier,
}

/// A request for an internal call (s3s-fs reads only the input).
fn internal<T>(input: T) -> S3Request<T> {
    S3Request {
        input,
        method: http::Method::HEAD,
        uri: http::Uri::default(),
        headers: http::HeaderMap::new(),
        extensions: http::Extensions::new(),
        credentials: None,
        region: None,
        service: None,
        trailing_headers: None,
    }
}

fn principal<T>(req: &S3Request<T>) -> String {
    req.credentials.as_ref().map_or_else(|| "anonymous".to_string(), |c| c.access_key.clone())
}

impl LocalS3 {
    async fn head(&self, bucket: &str, key: &str) -> S3Result<HeadObjectOutput> {
        let input = HeadObjectInput { bucket: bucket.to_string(), key: key.to_string(), ..Default::default() };
        Ok(self.fs.head_object(internal(input)).await?.output)
    }

    /// `If-Match`: the object's ETag must be the given one (or the object must exist, for `*`); else `412`.
    async fn check_if_match(&self, bucket: &str, key: &str, condition: Option<&ETagCondition>) -> S3Result<()> {
        let Some(condition) = condition else { return Ok(()) };
        let current = self.head(bucket, key).await?.e_tag;
        match (condition, current) {
            (ETagCondition::Any, _) => Ok(()),
            (ETagCondition::ETag(wanted), Some(current)) if current.strong_cmp(wanted) => Ok(()),
            _ => Err(s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold")),
        }
    }

    /// Sends the notification of an object just written (its size and ETag as now stored).
    async fn notify_created(&self, bucket: &str, key: &str, event_name: &str, principal: String) {
        match self.head(bucket, key).await {
            Ok(head) => {
                let size = head.content_length.unwrap_or_default();
                let etag = head.e_tag.map(ETag::into_value).unwrap_or_default();
                self.notifier.created(Created { bucket, key, event_name, size, etag, principal }).await;
            }
            // Replaced or deleted in between: the later write or delete has its own event.
            Err(e) => tracing::warn!(bucket, key, error = %e, "written object gone before its event"),
        }
    }
}

#[async_trait::async_trait]
impl S3 for LocalS3 {
    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket.clone();
        let out = self.fs.delete_bucket(req).await?;
        self.notifier.forget(&bucket);
        Ok(out)
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let input = req.input;
        self.head_bucket(internal(HeadBucketInput { bucket: input.bucket.clone(), ..Default::default() })).await?;
        self.notifier.configure(&input.bucket, input.notification_configuration).await?;
        Ok(S3Response::new(PutBucketNotificationConfigurationOutput {}))
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        let bucket = req.input.bucket;
        self.head_bucket(internal(HeadBucketInput { bucket: bucket.clone(), ..Default::default() })).await?;
        let config = self.notifier.configuration(&bucket);
        Ok(S3Response::new(GetBucketNotificationConfigurationOutput {
            queue_configurations: config.queue_configurations,
            ..Default::default()
        }))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let (bucket, key, who) = (req.input.bucket.clone(), req.input.key.clone(), principal(&req));
        let out = self.fs.put_object(req).await?;
        self.notify_created(&bucket, &key, "ObjectCreated:Put", who).await;
        Ok(out)
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key, who) = (req.input.bucket.clone(), req.input.key.clone(), principal(&req));
        let out = self.fs.copy_object(req).await?;
        self.notify_created(&bucket, &key, "ObjectCreated:Copy", who).await;
        Ok(out)
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        self.check_if_match(&req.input.bucket, &req.input.key, req.input.if_match.as_ref()).await?;
        self.fs.get_object(req).await
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        self.check_if_match(&req.input.bucket, &req.input.key, req.input.if_match.as_ref()).await?;
        self.fs.head_object(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        self.fs.list_objects(req).await
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.fs.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key, who) = (req.input.bucket.clone(), req.input.key.clone(), principal(&req));
        let out = self.fs.complete_multipart_upload(req).await?;
        self.notify_created(&bucket, &key, "ObjectCreated:CompleteMultipartUpload", who).await;
        Ok(out)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}
