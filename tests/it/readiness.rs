//! `/readyz` follows the broker, the assignment and the state restore: 200
//! once the daemon on the mock cluster holds its partitions with their state
//! restored, 503 naming the broker once no broker answers, 200 again after.

use std::time::{Duration, Instant};

use crate::support::in_process;

async fn readyz(http: &reqwest::Client, addr: std::net::SocketAddr) -> (u16, String) {
    let r = http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn wait_readyz(http: &reqwest::Client, addr: std::net::SocketAddr, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = readyz(http, addr).await;
        if code == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz still {code} after {within:?}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_needs_a_broker_partitions_and_restored_state() {
    let d = in_process::start(crate::repo(), 2, |_| {}).await;
    let http = reqwest::Client::new();
    let addr = d.running.http_addr;
    wait_readyz(&http, addr, 200, Duration::from_secs(30)).await;
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("triaged_kafka_broker_up 1"), "the broker gauge is up");

    d.cluster.broker_down(1).unwrap();
    let body = wait_readyz(&http, addr, 503, Duration::from_secs(30)).await;
    assert!(body.contains("no Kafka broker reachable"), "{body}");
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("triaged_kafka_broker_up 0"), "the broker gauge is down");

    d.cluster.broker_up(1).unwrap();
    wait_readyz(&http, addr, 200, Duration::from_secs(30)).await;
    d.stop().await;
}
