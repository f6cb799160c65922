use imgpipe_core::App;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    imgpipe_core::telemetry::init();
    // Built once per execution environment and reused by every invocation.
    let app = App::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let app = &app;
        async move { Ok::<_, Error>(imgpipe_upload::s3::handle_event(app, event.payload, event.context).await?) }
    }))
    .await
}
