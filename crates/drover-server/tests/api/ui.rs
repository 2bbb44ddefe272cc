//! The web dashboard, in a real headless Chromium driven over WebDriver (chromedriver, started
//! by the test on a free port), against a real server with a real sweep whose tasks are
//! claimed and reported through the HTTP API as an agent would.
//!
//! Every page must load without a console error and show the numbers the JSON API gives; the
//! job page must follow progress live (server-sent events, no reload); its cancel button must
//! cancel, and the nodes page's buttons drain and undrain; with an API key, the login form must
//! guard every page and actions must carry the session's CSRF token. With `DROVER_SCREENSHOTS=<dir>` set, the first test also saves the
//! overview and the job page there (how `docs/dashboard-*.png` are made).

use crate::helpers::{TestApp, eventually, spawn_app_real_time};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A headless Chromium session, and the chromedriver that runs it (killed on drop).
struct Browser {
    client: Client,
    driver_url: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts chromedriver on a free port and a headless Chromium session through it, with the
/// flags of `shared/notes/real-parts.md` and its own empty profile.
async fn browser() -> Browser {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("the dashboard's browser tests need chromedriver (Debian: chromium-driver): {e}")
        });
    let driver_url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(20), "chromedriver to listen", || {
        let http = http.clone();
        let url = format!("{driver_url}/status");
        async move { http.get(url).send().await.ok().map(|_| ()) }
    })
    .await;
    let profile = tempfile::tempdir().unwrap();
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,1000",
        &format!("--user-data-dir={}", profile.path().display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("a headless Chromium session through chromedriver");
    Browser {
        client,
        driver_url,
        driver,
        _profile: profile,
    }
}

impl Browser {
    /// The browser's console entries since the last call (chromedriver's log endpoint).
    async fn console(&self) -> Vec<Value> {
        let session = self.client.session_id().await.unwrap().unwrap();
        let answer: Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("chromedriver gave no browser log: {answer}"))
    }

    /// Loads `url` and checks that the page logged no error to the console.
    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
        self.assert_no_console_errors(url).await;
    }

    async fn assert_no_console_errors(&self, what: &str) {
        let errors: Vec<Value> = (self.console().await)
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .collect();
        assert!(errors.is_empty(), "{what} logged errors: {errors:?}");
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Waits for `css` to be on the page (after a click or a form that loads another page).
    /// Clicks the element `css` finds.
    async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        element.click().await.unwrap();
    }

    async fn wait_for(&self, css: &str) {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} never appeared: {e}"));
    }

    async fn texts(&self, css: &str) -> Vec<String> {
        let mut out = Vec::new();
        for e in self.client.find_all(Locator::Css(css)).await.unwrap() {
            out.push(e.text().await.unwrap());
        }
        out
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("DROVER_SCREENSHOTS") {
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
        }
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// A sweep of 3 algorithms x 2 dimensions x 3 seeds (18 tasks).
async fn sweep(app: &TestApp) -> String {
    let (status, body) = app
        .post_json(
            "/api/v1/jobs",
            json!({
                "name": "rastrigin sweep",
                "maxAttempts": 1,
                "parameters": {
                    "algorithm": ["random", "pso", "de"],
                    "dimension": [2, 5],
                    "seed": [1, 2, 3],
                },
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["jobId"].as_str().unwrap().to_string()
}

/// The objective value the test reports for a task: depends on its configuration and seed, so
/// configurations differ and their runs spread.
fn fopt_of(payload: &Value) -> f64 {
    let base = match payload["algorithm"].as_str().unwrap() {
        "de" => 0.5,
        "pso" => 2.0,
        _ => 9.0,
    };
    base * payload["dimension"].as_f64().unwrap() + payload["seed"].as_f64().unwrap() / 10.0
}

/// Claims `n` tasks for `spot`: (id, payload).
async fn claim(app: &TestApp, spot: &str, n: u32) -> Vec<(String, Value)> {
    let (status, body) = app
        .post_json(
            "/internal/v1/tasks/claim",
            json!({"spotId": spot, "maxTasks": n}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let payload = serde_json::from_str(t["payload"].as_str().unwrap()).unwrap();
            (t["id"].as_str().unwrap().to_string(), payload)
        })
        .collect()
}

async fn complete(app: &TestApp, spot: &str, id: &str, payload: &Value) -> f64 {
    let fopt = fopt_of(payload);
    let (status, body) = app
        .post_json(
            &format!("/internal/v1/tasks/{id}/complete"),
            json!({"spotId": spot, "fopt": fopt, "iter": 100, "runtimeMs": 1200}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    fopt
}

async fn job_json(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get_json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[cfg_attr(
    missing_chromium,
    ignore = "needs chromium and chromedriver, missing where this was built"
)]
#[tokio::test(flavor = "multi_thread")]
async fn every_page_shows_the_apis_numbers_follows_progress_live_and_cancels() {
    let app = spawn_app_real_time(|_| {}).await;
    let job = sweep(&app).await;
    let spot = app.hello().await;
    let mut claimed = claim(&app, &spot, 14).await;
    // 12 results, one task failed for good, one still running.
    let mut best = std::collections::BTreeMap::<String, f64>::new();
    for (id, payload) in claimed.drain(..12) {
        let fopt = complete(&app, &spot, &id, &payload).await;
        let key = format!(
            "{} {}",
            payload["algorithm"].as_str().unwrap(),
            payload["dimension"]
        );
        let b = best.entry(key).or_insert(f64::INFINITY);
        *b = b.min(fopt);
    }
    let (failed_id, _) = claimed.remove(0);
    let (status, body) = app
        .post_json(
            &format!("/internal/v1/tasks/{failed_id}/fail"),
            json!({"spotId": spot, "error": "Traceback (most recent call last):\nMemoryError: out of memory in step 7", "retriable": false}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (still_running, running_payload) = claimed.remove(0);

    let b = browser().await;

    // Overview: the cards are the health route's figures, the tables the lists'.
    b.open(&app.url("/")).await;
    assert_eq!(b.path().await, "/ui", "/ redirects to the dashboard");
    let (_, health) = app.get_json("/api/v1/health").await;
    assert_eq!(
        b.text("[data-live=pendingTasks]").await,
        health["pendingTasks"].to_string()
    );
    assert_eq!(
        b.text("[data-live=runningTasks]").await,
        health["runningTasks"].to_string()
    );
    assert_eq!(b.text("#nodes-by-status [data-status=UP]").await, "1");
    assert_eq!(b.text("#jobs-by-status [data-status=RUNNING]").await, "1");
    assert_eq!(b.text("#queue-by-class [data-class=low]").await, "4");
    assert_eq!(
        b.client
            .find_all(Locator::Css("svg.chart"))
            .await
            .unwrap()
            .len(),
        2
    );
    b.screenshot("dashboard-overview.png").await;

    // Jobs list.
    b.open(&app.url("/ui/jobs")).await;
    let row = format!("#jobs tr[data-job='{job}']");
    assert!(b.text(&row).await.contains("rastrigin sweep"));

    // The job page: counts as the API gives them, results, the summary and the failure.
    let api = job_json(&app, &job).await;
    b.open(&app.url(&format!("/ui/jobs/{job}"))).await;
    assert_eq!(
        b.text("[data-live=done]").await,
        api["completedTasks"].to_string()
    );
    assert_eq!(
        b.text("[data-live=failed]").await,
        api["failedTasks"].to_string()
    );
    assert_eq!(
        b.text("[data-live=running]").await,
        api["runningTasks"].to_string()
    );
    assert_eq!(
        b.text("[data-live=pending]").await,
        api["pendingTasks"].to_string()
    );
    assert_eq!(b.texts("#results tbody tr").await.len(), 12);
    // The summary groups by every parameter but the seed, best first, with the best value of
    // each configuration the test reported.
    let cells = b.texts("#summary tbody td").await;
    let rows: Vec<&[String]> = cells.chunks(5).collect();
    assert_eq!(rows.len(), best.len());
    let mut expected: Vec<(&String, &f64)> = best.iter().collect();
    expected.sort_by(|x, y| x.1.total_cmp(y.1));
    for (row, (config, value)) in rows.iter().zip(expected) {
        assert_eq!(format!("{} {}", row[0], row[1]), *config, "{row:?}");
        assert_eq!(row[2], "3", "{row:?}: runs");
        assert_eq!(row[3], value.to_string(), "{row:?}: best");
    }
    assert!(b.text("details.failure").await.contains(&failed_id));
    b.screenshot("dashboard-job.png").await;
    b.click("details.failure summary").await;
    assert!(
        b.text("details.failure pre")
            .await
            .contains("MemoryError: out of memory in step 7")
    );

    // Sorting by fopt, then again for the other direction.
    b.click("#results th a[data-column=fopt]").await;
    b.wait_for("#results[data-dir=desc]").await;
    b.assert_no_console_errors("sorting").await;
    let fopts = |v: Vec<String>| -> Vec<f64> { v.iter().map(|s| s.parse().unwrap()).collect() };
    let descending = fopts(b.texts("#results td[data-fopt]").await);
    assert!(
        descending.windows(2).all(|w| w[0] >= w[1]),
        "{descending:?}"
    );
    b.click("#results th a[data-column=fopt]").await;
    b.wait_for("#results[data-dir=asc]").await;
    let ascending = fopts(b.texts("#results td[data-fopt]").await);
    assert!(ascending.windows(2).all(|w| w[0] <= w[1]), "{ascending:?}");

    // The CSV download is the native export.
    let csv = app
        .http
        .get(app.url(&format!("/ui/jobs/{job}/results.csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    let exported = app
        .http
        .get(app.url(&format!("/api/v1/jobs/{job}/results?format=csv")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.text().await.unwrap(), exported);

    // Live: a completion through the API shows without a reload.
    b.client
        .execute("window.notReloaded = true; return null;", vec![])
        .await
        .unwrap();
    complete(&app, &spot, &still_running, &running_payload).await;
    let done = job_json(&app, &job).await["completedTasks"].to_string();
    eventually(Duration::from_secs(20), "the done count to follow", || {
        let b = &b;
        let done = done.clone();
        async move { (b.text("[data-live=done]").await == done).then_some(()) }
    })
    .await;
    let kept = b
        .client
        .execute("return window.notReloaded === true;", vec![])
        .await
        .unwrap();
    assert_eq!(kept, json!(true), "the page was reloaded");
    b.assert_no_console_errors("live updates").await;

    // The other pages load without errors and show the store's records.
    b.open(&app.url("/ui/nodes")).await;
    let row = format!("#nodes tr[data-node='{spot}']");
    assert!(b.text(&row).await.contains("UP"));
    // Its drain button drains it, as the API then shows; the undrain button undoes it.
    b.click(&format!("{row} form[action$='/drain'] button"))
        .await;
    b.wait_for(&format!("{row} span.s-draining")).await;
    b.assert_no_console_errors("draining").await;
    let status =
        |spots: Vec<drover_api::Spot>| spots.into_iter().find(|s| s.id == spot).unwrap().status;
    assert_eq!(status(app.client.spots().await.unwrap()), "DRAINING");
    b.click(&format!("{row} form[action$='/undrain'] button"))
        .await;
    b.wait_for(&format!("{row} span.s-up")).await;
    assert_eq!(status(app.client.spots().await.unwrap()), "UP");
    for (path, heading) in [
        ("/ui/runners", "Runners"),
        ("/ui/placement", "Placement"),
        ("/ui/journal", "Journal and sinks"),
        ("/ui/cluster", "Cluster"),
        ("/ui/priority", "Priority classes"),
    ] {
        b.open(&app.url(path)).await;
        assert_eq!(b.text("main h1").await, heading, "{path}");
    }
    let (_, cluster) = app.get_json("/api/v1/cluster").await;
    b.open(&app.url("/ui/cluster")).await;
    assert_eq!(b.text("#role").await, cluster["role"].as_str().unwrap());

    // The journal's last entry, as the journal route gives it.
    b.open(&app.url("/ui/journal")).await;
    let (_, journal) = app.get_json("/api/v1/journal?limit=1").await;
    assert_eq!(b.text("#journal-head").await, journal["head"].to_string());

    // The placement contract's nodes, as `GET /nodes` lists them.
    for (id, zone) in [("store-a", "eu-1"), ("store-b", "eu-2")] {
        let (status, body) = app
            .post_json(
                "/register",
                json!({"id": id, "zone": zone, "addr": "10.0.0.1:9000", "capacity_gb": 50}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    b.open(&app.url("/ui/placement")).await;
    let (_, placed) = app.get_json("/nodes").await;
    let listed = b.texts("#placement-nodes tbody tr").await;
    assert_eq!(
        listed.len(),
        placed.as_array().map_or(0, Vec::len),
        "{placed}"
    );
    assert!(
        listed
            .iter()
            .any(|r| r.contains("store-b") && r.contains("eu-2"))
    );

    // The priority router's queues, as its own metrics route counts them.
    for (id, priority) in [("p1", 10), ("p2", 12), ("p3", 5)] {
        let (status, body) = app
            .post_json(
                "/api/jobs/register",
                json!({"id": id, "type": "calculate", "priority": priority}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    b.open(&app.url("/ui/priority")).await;
    let (_, metrics) = app.get_json("/api/metrics").await;
    for class in ["high", "medium", "low"] {
        let queue = format!("job.{class}");
        assert_eq!(
            b.text(&format!(
                "#classes tr[data-class={class}] [data-word=pending]"
            ))
            .await,
            metrics["queues"][&queue].to_string(),
            "{class}: {metrics}"
        );
    }
    assert_eq!(
        b.text("#classes tr[data-class=high] [data-word=pending]")
            .await,
        "2"
    );

    // Cancel: the button cancels the job, as the API then shows.
    b.open(&app.url(&format!("/ui/jobs/{job}"))).await;
    b.click("#cancel button").await;
    b.wait_for("span.s-cancelled[data-live=status]").await;
    b.assert_no_console_errors("cancelling").await;
    assert_eq!(job_json(&app, &job).await["status"], "CANCELLED");
    assert_eq!(b.text("[data-live=status]").await, "CANCELLED");
    assert!(
        b.client.find(Locator::Css("#cancel")).await.is_err(),
        "a finished job has no cancel button"
    );

    b.close().await;
    app.assert_job_counts_consistent().await;
    app.finish().await;
}

#[cfg_attr(
    missing_chromium,
    ignore = "needs chromium and chromedriver, missing where this was built"
)]
#[tokio::test(flavor = "multi_thread")]
async fn with_an_api_key_the_login_form_guards_the_pages_and_actions_need_the_sessions_token() {
    const KEY: &str = "dashboard-test-key";
    let app = spawn_app_real_time(|c| c.api_key = Some(KEY.into())).await;
    let created = app.create_job(3, json!({})).await;
    let job = created.job_id;
    let spot = app.hello().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Without a session: pages send the browser to the login form, the rest is refused.
    let page = no_redirects.get(app.url("/ui/jobs")).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/ui/login?next=/ui/jobs");
    for path in ["/ui/events", &format!("/ui/jobs/{job}/results.csv")] {
        let refused = no_redirects.get(app.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        assert!(refused.text().await.unwrap().contains("LOGIN_REQUIRED"));
    }
    let cancel = no_redirects
        .post(app.url(&format!("/ui/jobs/{job}/cancel")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=anything")
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 401);

    let b = browser().await;
    b.open(&app.url(&format!("/ui/jobs/{job}"))).await;
    assert_eq!(b.path().await, "/ui/login");

    // A wrong key is refused on the form (the 401 itself is logged by the browser).
    let form = b.client.form(Locator::Css("#login")).await.unwrap();
    form.set_by_name("key", "not-the-key").await.unwrap();
    form.submit().await.unwrap();
    b.wait_for("#login-error").await;
    assert_eq!(b.path().await, "/ui/login");
    assert!(
        b.text("#login-error")
            .await
            .contains("not this server's API key")
    );
    let _ = b.console().await;

    // The right key lands on the page asked for, with an HttpOnly, SameSite=Strict cookie
    // that does not hold the key.
    let form = b.client.form(Locator::Css("#login")).await.unwrap();
    form.set_by_name("key", KEY).await.unwrap();
    form.submit().await.unwrap();
    b.wait_for("#tasks-by-status").await;
    b.assert_no_console_errors("logging in").await;
    assert_eq!(b.path().await, format!("/ui/jobs/{job}"));
    let cookie = b.client.get_named_cookie("drover_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");
    assert!(!cookie.value().contains(KEY));

    // The session without the page's CSRF token cannot act.
    let session = format!("drover_session={}", cookie.value());
    for action in [
        format!("/ui/jobs/{job}/cancel"),
        format!("/ui/nodes/{spot}/drain"),
    ] {
        let forged = no_redirects
            .post(app.url(&action))
            .header("cookie", &session)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("csrf=forged")
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 403, "{action}");
        assert!(forged.text().await.unwrap().contains("CSRF_MISMATCH"));
    }
    assert_eq!(app.client.job(&job).await.unwrap().status, "PENDING");
    assert_eq!(app.client.spots().await.unwrap()[0].status, "UP");

    // The page's own form can.
    b.click("#cancel button").await;
    b.wait_for("span.s-cancelled[data-live=status]").await;
    b.assert_no_console_errors("cancelling").await;
    assert_eq!(app.client.job(&job).await.unwrap().status, "CANCELLED");

    // And the nodes page's drain button can.
    b.open(&app.url("/ui/nodes")).await;
    b.click(&format!(
        "#nodes tr[data-node='{spot}'] form[action$='/drain'] button"
    ))
    .await;
    b.wait_for(&format!("#nodes tr[data-node='{spot}'] span.s-draining"))
        .await;
    assert_eq!(app.client.spots().await.unwrap()[0].status, "DRAINING");

    // Logging out ends the session in this browser.
    b.click("form.logout button").await;
    b.wait_for("#login").await;
    assert_eq!(b.path().await, "/ui/login");
    b.open(&app.url("/ui")).await;
    assert_eq!(b.path().await, "/ui/login");

    b.close().await;
    app.finish().await;
}

/// Reads a page's HTML with a plain HTTP client (no script runs).
async fn html(app: &TestApp, path: &str) -> (u16, String) {
    let resp = app.http.get(app.url(path)).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn the_pages_are_whole_without_javascript_and_errors_name_their_code() {
    let app = crate::helpers::spawn_app().await;
    let job = sweep(&app).await;
    let spot = app.hello().await;
    for (id, payload) in claim(&app, &spot, 6).await {
        complete(&app, &spot, &id, &payload).await;
    }

    // The figures are in the HTML itself; the script only keeps them fresh.
    let (status, page) = html(&app, &format!("/ui/jobs/{job}")).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"data-live="done">6<"#), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no outside address"
    );

    // The configuration form works as a plain GET: by seed alone, 6 runs fall into 3 seeds.
    let (_, by_seed) = html(&app, &format!("/ui/jobs/{job}?pick=1&with_seed=1")).await;
    let summary = &by_seed[by_seed.find(r#"id="summary""#).unwrap()..];
    let summary = &summary[..summary.find("</table>").unwrap()];
    assert!(summary.contains("<th>seed</th>") && !summary.contains("<th>algorithm</th>"));
    assert_eq!(summary.matches("<tr>").count(), 1 + 3, "{summary}");

    // What users wrote is shown as text, never as markup.
    app.create_job(1, json!({"name": "<script>alert(1)</script>"}))
        .await;
    let (_, jobs) = html(&app, "/ui/jobs").await;
    assert!(jobs.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!jobs.contains("<script>alert"));

    // An unknown job is the native API's 404, as a page.
    let (status, missing) = html(&app, "/ui/jobs/job-nope").await;
    assert_eq!(status, 404);
    assert!(missing.contains("JOB_NOT_FOUND"), "{missing}");

    // A form from elsewhere cannot cancel, even on an open dashboard.
    let forged = app
        .http
        .post(app.url(&format!("/ui/jobs/{job}/cancel")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(job_json(&app, &job).await["status"], "RUNNING");
    app.finish().await;
}

#[tokio::test]
async fn a_live_stream_ends_when_the_server_stops() {
    let app = spawn_app_real_time(|_| {}).await;
    let job = sweep(&app).await;
    let mut stream = app
        .http
        .get(app.url(&format!("/ui/jobs/{job}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let first = stream
        .chunk()
        .await
        .unwrap()
        .expect("the job's figures at once");
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(
        first.starts_with("data: ") && first.contains(r#""total":18"#),
        "{first}"
    );

    // A change is sent as it commits.
    let spot = app.hello().await;
    claim(&app, &spot, 1).await;
    let next = stream.chunk().await.unwrap().expect("the claim's figures");
    assert!(String::from_utf8_lossy(&next).contains(r#""running":1"#));

    // On stop the stream ends cleanly (not cut off after the grace), so it holds up nothing.
    app.begin_shutdown();
    loop {
        match stream.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => panic!("the stream was cut off instead of ending: {e}"),
        }
    }
    app.stopped().await;
}
