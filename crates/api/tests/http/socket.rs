//! A real server on a loopback socket, shut down gracefully.

use std::time::Duration;

use citypay_api::serve_until;
use citypay_api_types::Health;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::app_with;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_and_drains_on_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let server = tokio::spawn(serve_until(
        listener,
        app_with(Duration::from_secs(5)),
        shutdown,
    ));

    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let health: Health = response.json().await.unwrap();
    assert_eq!(health.status, "ok");

    // A request in flight when shutdown starts still gets its answer.
    let in_flight = tokio::spawn(client.get(format!("http://{addr}/test/slow")).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "done");

    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    result
        .expect("the server stops")
        .expect("no panic")
        .expect("a clean exit");
    assert!(
        reqwest::get(format!("http://{addr}/health")).await.is_err(),
        "still listening"
    );
}
