//! Problem candidates on a running daemon: a CI whose fault comes back within
//! the period is raised once on `/problems` and in the metric.

use crate::support::in_process;

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use triaged::config::{HumanDuration, ProblemsConfig};
use triaged::incident::ActionKind;

async fn send(producer: &FutureProducer, status: &str) {
    let payload = format!(
        r#"{{"source":"checks","ci":{{"host":"db-pay-fra1-01"}},"check":"Database down","severity":"critical","status":"{status}","summary":"db"}}"#
    );
    producer
        .send(FutureRecord::to("events").key("db-pay-fra1-01").payload(&payload), Duration::from_secs(5))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurring_fault_raises_one_problem_candidate() {
    let d = in_process::start(crate::repo(), 1, |cfg| {
        cfg.problems = ProblemsConfig { threshold: 2, period: HumanDuration(Duration::from_secs(3600)) };
    })
    .await;
    let (producer, receiver, running) = (&d.producer, &d.receiver, &d.running);
    let count = |kind: ActionKind| move |log: &[triaged_testkit::itsm::Received]| log.iter().filter(|r| r.kind == kind).count();
    let minute = Duration::from_secs(60);

    send(producer, "firing").await;
    receiver.wait_for(minute, |log| count(ActionKind::Open)(log) == 1).await.expect("opened");
    send(producer, "resolved").await;
    receiver.wait_for(minute, |log| count(ActionKind::Resolve)(log) == 1).await.expect("resolved");
    assert_eq!(running.metrics.problem_candidates.get(), 0, "one incident is not a problem");
    send(producer, "firing").await;
    receiver.wait_for(minute, |log| count(ActionKind::Reopen)(log) == 1).await.expect("reopened within the reopen window");

    // The core raises the candidate as it dispatches the reopen; /problems shows it after the next gauge refresh.
    let url = format!("http://{}/problems", running.http_addr);
    let deadline = Instant::now() + minute;
    let problems = loop {
        let list: Vec<serde_json::Value> = reqwest::get(&url).await.unwrap().json().await.unwrap();
        if !list.is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "no problem candidate on /problems");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["ci"], "db-pay-fra1-01");
    assert_eq!(problems[0]["incidents"].as_array().unwrap().len(), 2);
    assert_eq!(running.metrics.problem_candidates.get(), 1);

    assert!(d.stop().await.clean_shutdown);
}
