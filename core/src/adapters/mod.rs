//! Adapters of the ports to S3, SQS and MongoDB, and their in-memory twins.

pub mod memory;
pub mod mongo;
pub mod s3;
pub mod sqs;

use crate::config::Config;

/// The shared AWS SDK configuration (region, credentials chain), loaded once per execution environment.
pub async fn aws_config(config: &Config) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(config.region.clone()))
        .load()
        .await
}
