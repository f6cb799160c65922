use imgpipe_core::App;
use lambda_http::{Error, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    imgpipe_core::telemetry::init();
    // Built once per execution environment and reused by every invocation.
    let app = App::from_env().await?;
    lambda_http::run(service_fn(|req| {
        let app = &app;
        async move { Ok::<_, Error>(imgpipe_status::handle(app, req).await) }
    }))
    .await
}
