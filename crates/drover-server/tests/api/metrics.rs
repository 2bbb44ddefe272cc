//! `/metrics`: a valid OpenMetrics exposition (read back with a strict parser), every family
//! described, no label holding an id, and series that move with real work done over HTTP:
//! requests by route template, claim and report latencies, task transitions, nodes by status
//! as the spot list shows them, and the journal's publishing.

use crate::helpers::{TestApp, eventually, spawn, spawn_app, spawn_app_with};
use drover_api::{CompleteRequest, FailRequest};
use drover_server::journal::{JournalConfig, SinkSpec};
use drover_server::{ListenerConfig, Surface};
use openmetrics_parser::{
    MetricFamily, MetricsExposition, OpenMetricsType, OpenMetricsValue, openmetrics,
};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;
type Family = MetricFamily<OpenMetricsType, OpenMetricsValue>;

/// One scrape, parsed: every line must parse, or the test fails with the text.
struct Scrape(Exposition);

impl Scrape {
    /// A scrape of the main listener showing the store as it is now.
    async fn of(app: &TestApp) -> Scrape {
        Scrape::of_url(app, &app.url("/metrics")).await
    }

    /// A scrape of `url` whose figures read from the store were read after this call: a
    /// scrape waits only a moment for its read, and a read slower than that shows from the
    /// next scrape on.
    async fn of_url(app: &TestApp, url: &str) -> Scrape {
        let asked = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        eventually(
            Duration::from_secs(30),
            "a scrape of the store as it is",
            || async {
                let scrape = Scrape::once(app, url).await;
                let read_at = scrape.value("drover_metrics_store_read_timestamp_seconds", &[]);
                // The stamp went through a float of seconds: a microsecond is well within it.
                (read_at >= asked - 1e-6).then_some(scrape)
            },
        )
        .await
    }

    /// One scrape of `url`, whatever its figures.
    async fn once(app: &TestApp, url: &str) -> Scrape {
        let resp = app.http.get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let text = resp.text().await.unwrap();
        match openmetrics::parse_openmetrics(&text) {
            Ok(parsed) => Scrape(parsed),
            Err(e) => panic!("/metrics is not valid OpenMetrics ({e:?}):\n{text}"),
        }
    }

    fn family(&self, name: &str) -> &Family {
        (self.0.families.get(name)).unwrap_or_else(|| panic!("no family {name} in the scrape"))
    }

    /// Every series of `name` with its labels and value (a histogram's value is its count).
    fn series(&self, name: &str) -> Vec<(HashMap<String, String>, f64)> {
        let family = self.family(name);
        family
            .iter_samples()
            .map(|s| {
                let labels = s.get_labelset().unwrap();
                let labels = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let value = match &s.value {
                    OpenMetricsValue::Counter(c) => c.value.as_f64(),
                    OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => g.as_f64(),
                    OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                    other => panic!("{name}: unexpected value {other:?}"),
                };
                (labels, value)
            })
            .collect()
    }

    /// The value of the series of `name` whose labels include `labels`; 0 when there is none
    /// (a labelled series appears with its first observation).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = (self.series(name).into_iter())
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} names several series");
        found.first().copied().unwrap_or(0.0)
    }
}

/// A label value that holds an id: drover's ids are a kind and 32 hex digits, a session id a
/// UUID.
fn looks_like_id(value: &str) -> bool {
    let mut run = 0;
    for c in value.chars() {
        run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 8 {
            return true;
        }
    }
    false
}

async fn complete(app: &TestApp, task: &str, spot: &str) {
    let req: CompleteRequest = serde_json::from_value(json!({"spotId": spot})).unwrap();
    app.client.complete(task, &req).await.unwrap();
}

#[tokio::test]
async fn the_page_is_valid_openmetrics_every_family_is_described_and_no_label_is_an_id() {
    let app = spawn_app().await;
    let job = app.create_job(3, json!({})).await;
    let spot = app.hello().await;
    let other = app.hello().await;
    let tasks = app.client.claim(&spot, 2).await.unwrap();
    complete(&app, &tasks[0].id, &spot).await;
    let fail = FailRequest {
        spot_id: spot.clone(),
        error: Some("boom".into()),
        retriable: Some(true),
        attempt: None,
    };
    app.client.fail(&tasks[1].id, &fail).await.unwrap();
    // Paths that hold ids: one a route matches, one none does.
    let task_path = format!("/api/v1/tasks/{}", tasks[0].id);
    let read = app.http.get(app.url(&task_path)).send().await.unwrap();
    assert_eq!(read.status().as_u16(), 200);
    let stray = format!("/api/v1/nothing/{}", job.job_id);
    let missing = app.http.get(app.url(&stray)).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    let scrape = Scrape::of(&app).await;
    let mut names: Vec<&String> = scrape.0.families.keys().collect();
    names.sort();
    for name in names {
        let family = scrape.family(name);
        assert!(name.starts_with("drover_"), "{name} lacks the prefix");
        assert!(!family.help.trim().is_empty(), "{name} has no HELP");
        assert_ne!(
            family.family_type,
            OpenMetricsType::Unknown,
            "{name} has no TYPE"
        );
        for (labels, _) in scrape.series(name) {
            for (label, value) in labels {
                let ids = [&job.job_id, &spot, &other, &tasks[0].id, &tasks[1].id];
                assert!(
                    !looks_like_id(&value) && !ids.iter().any(|id| value.contains(id.as_str())),
                    "{name}{{{label}={value:?}}} holds an id"
                );
            }
        }
    }
    // The route template, never the path.
    let read = [("route", "/api/v1/tasks/{id}"), ("method", "GET")];
    assert_eq!(scrape.value("drover_http_requests", &read), 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(scrape.value("drover_http_requests", &unmatched), 1.0);
    // Two claimed; one done, one failed and back to NEW for its retry.
    for (from, to, n) in [
        ("NEW", "RUNNING", 2.0),
        ("RUNNING", "DONE", 1.0),
        ("RUNNING", "NEW", 1.0),
        ("RUNNING", "FAILED", 0.0),
    ] {
        let labels = [("from", from), ("to", to)];
        assert_eq!(
            scrape.value("drover_task_transitions", &labels),
            n,
            "{from} to {to}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn requests_claims_reports_and_transitions_are_counted_as_work_is_done() {
    let app = spawn_app().await;
    let spot = app.hello().await;
    let before = Scrape::of(&app).await;

    app.create_job(2, json!({})).await;
    let task = app.client.claim(&spot, 1).await.unwrap().remove(0);
    complete(&app, &task.id, &spot).await;
    let after = Scrape::of(&app).await;

    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let create = [
        ("route", "/api/v1/jobs"),
        ("method", "POST"),
        ("status", "201"),
    ];
    let claim = [
        ("route", "/internal/v1/tasks/claim"),
        ("method", "POST"),
        ("status", "200"),
    ];
    let report = [
        ("route", "/internal/v1/tasks/{id}/complete"),
        ("method", "POST"),
        ("status", "200"),
    ];
    for labels in [&create[..], &claim[..], &report[..]] {
        assert_eq!(moved("drover_http_requests", labels), 1.0, "{labels:?}");
        assert_eq!(
            moved("drover_http_request_duration_seconds", labels),
            1.0,
            "{labels:?}"
        );
    }
    // The scrape before this one is counted too, on its own route.
    let scraped = [("route", "/metrics"), ("method", "GET"), ("status", "200")];
    assert!(after.value("drover_http_requests", &scraped) >= 1.0);

    assert_eq!(moved("drover_task_claim_duration_seconds", &[]), 1.0);
    assert_eq!(moved("drover_task_report_duration_seconds", &[]), 1.0);
    for operation in ["create_job", "claim", "report"] {
        let op = [("operation", operation)];
        assert_eq!(
            moved("drover_store_operation_duration_seconds", &op),
            1.0,
            "{operation}"
        );
    }
    let claimed = [("from", "NEW"), ("to", "RUNNING")];
    let done = [("from", "RUNNING"), ("to", "DONE")];
    assert_eq!(moved("drover_task_transitions", &claimed), 1.0);
    assert_eq!(moved("drover_task_transitions", &done), 1.0);
    assert_eq!(moved("drover_task_transitions", &[("to", "FAILED")]), 0.0);
    // One task done, one still waiting.
    assert_eq!(after.value("drover_tasks_waiting", &[]), 1.0);
    assert_eq!(after.value("drover_tasks_running", &[]), 0.0);
    assert_eq!(after.value("drover_metrics_store_read_failures", &[]), 0.0);
    app.finish().await;
}

#[tokio::test]
async fn nodes_by_status_match_the_spot_list() {
    let app = spawn_app_with(|c| c.spot_timeout = Duration::from_secs(10)).await;
    let silent = app.hello().await;
    let alive = [app.hello().await, app.hello().await];
    app.advance(Duration::from_secs(11));
    for spot in &alive {
        app.heartbeat(spot).await;
    }
    let down = app.state.spot_reaper().reap().await.unwrap();
    assert_eq!(down.nodes, vec![silent]);

    let scrape = Scrape::of(&app).await;
    let spots = app.client.spots().await.unwrap();
    for status in ["UP", "DRAINING", "DOWN"] {
        let listed = spots.iter().filter(|s| s.status == status).count();
        assert_eq!(
            scrape.value("drover_nodes", &[("status", status)]),
            listed as f64,
            "{status}"
        );
    }
    assert_eq!(scrape.value("drover_nodes", &[("status", "DOWN")]), 1.0);
    for status in ["STARTING", "RUNNING"] {
        assert_eq!(scrape.value("drover_runners", &[("status", status)]), 0.0);
    }
    app.finish().await;
}

#[tokio::test]
async fn the_metrics_listener_shows_the_same_registry_and_counts_its_own_requests() {
    let app = spawn(
        |c| {
            c.listeners.push(ListenerConfig {
                addr: "127.0.0.1:0".parse().unwrap(),
                surfaces: vec![Surface::Metrics],
            })
        },
        true,
    )
    .await;
    let metrics = app.addrs[1].0.clone();
    app.create_job(1, json!({})).await;
    let health = app.http.get(format!("{metrics}/health")).send().await;
    assert_eq!(health.unwrap().status().as_u16(), 200);

    let scrape = Scrape::of_url(&app, &format!("{metrics}/metrics")).await;
    let create = [("route", "/api/v1/jobs"), ("method", "POST")];
    assert_eq!(scrape.value("drover_http_requests", &create), 1.0);
    let health = [("route", "/health"), ("method", "GET"), ("status", "200")];
    assert_eq!(scrape.value("drover_http_requests", &health), 1.0);
    assert_eq!(scrape.value("drover_tasks_waiting", &[]), 1.0);
    app.finish().await;
}

#[tokio::test]
async fn the_journal_shows_its_head_what_is_published_and_its_routing() {
    let sink = tempfile::tempdir().unwrap();
    let config = JournalConfig::to(SinkSpec::File(sink.path().to_path_buf()));
    let app = spawn_app_with(move |c| c.journal = Some(config)).await;
    app.create_job(2, json!({})).await;
    app.hello().await;

    let before = Scrape::of(&app).await;
    let head = before.value("drover_journal_head", &[]);
    assert!(head >= 2.0, "a job and a spot are journaled: {head}");
    assert_eq!(before.value("drover_journal_published_upto", &[]), 0.0);

    let publisher = app.state.journal.clone().unwrap();
    assert!(publisher.publish().await.unwrap() > 0);
    let after = Scrape::of(&app).await;
    assert_eq!(after.value("drover_journal_published_upto", &[]), head);
    assert_eq!(after.value("drover_journal_pending_blobs", &[]), 0.0);
    let states = after.series("drover_journal_routing_state");
    assert_eq!(states.len(), 6, "one series per state: {states:?}");
    let on: Vec<&String> = (states.iter())
        .filter(|(_, v)| *v == 1.0)
        .map(|(l, _)| &l["state"])
        .collect();
    assert_eq!(on, ["healthy"]);
    // Only the configured sink has a series.
    let failures = after.series("drover_journal_sink_consecutive_failures");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0["sink"], "primary");
    assert_eq!(failures[0].1, 0.0);
    app.finish().await;
}

#[tokio::test]
async fn with_the_store_away_a_scrape_still_answers_with_the_figures_read_last() {
    let app = spawn_app().await;
    app.create_job(2, json!({})).await;
    let read = Scrape::of(&app).await;
    let read_at = read.value("drover_metrics_store_read_timestamp_seconds", &[]);
    assert_eq!(read.value("drover_tasks_waiting", &[]), 2.0);

    app.store().ops.close().await.unwrap();
    let url = app.url("/metrics");
    let failed = eventually(Duration::from_secs(30), "a failed read counted", || async {
        let scrape = Scrape::once(&app, &url).await;
        let failures = scrape.value("drover_metrics_store_read_failures", &[]);
        (failures >= 1.0).then_some(scrape)
    })
    .await;
    // The last figures, with the time they were read; the series counted from memory go on.
    assert_eq!(failed.value("drover_tasks_waiting", &[]), 2.0);
    assert_eq!(
        failed.value("drover_metrics_store_read_timestamp_seconds", &[]),
        read_at
    );
    assert_eq!(failed.value("drover_cluster_leader", &[]), 1.0);
    app.begin_shutdown();
    app.stopped().await;
}
