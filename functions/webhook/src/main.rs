use aws_lambda_events::event::sqs::SqsEvent;
use imgpipe_core::App;
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    imgpipe_core::telemetry::init();
    // Built once per execution environment and reused by every invocation.
    let app = App::from_env().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let app = &app;
        async move { Ok::<_, Error>(imgpipe_webhook::handle(app, event.payload).await) }
    }))
    .await
}
