//! The web dashboard at `/ui` (and `/`, which sends a browser there): server-rendered pages
//! over the same store and service reads the JSON surfaces make, a little plain JavaScript for
//! live updates over server-sent events, and forms for the few actions (cancel a job, drain or undrain a node, log out).
//!
//! It owns presentation only: what each page shows and how (`pages.rs`, `job.rs`, `svg.rs`,
//! the compiled-in `static/`), its live streams (`live.rs`), its login and CSRF tokens
//! (`session.rs`) and the in-memory last hour of the overview's charts (`history.rs`). It must
//! not decide anything the core or the services decide, hold SQL, or copy a rule: job status,
//! counts, "best" objective values and priority classes all come from `drover_core`, and every
//! change goes through the same store call the native API makes. No page loads anything from
//! outside the server.

pub mod history;
mod job;
mod live;
mod pages;
pub mod session;
mod svg;

use crate::error::ApiError;
use crate::{AppState, Clock};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use session::{Access, Sessions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the dashboard keeps for the life of the server: its sessions' secret and the last hour.
pub struct Dashboard {
    pub sessions: Sessions,
    pub history: history::History,
    /// Whether the server speaks TLS, so the session cookie is marked `Secure`.
    secure_cookies: AtomicBool,
}

impl Dashboard {
    pub fn new(api_key: Option<String>, clock: Arc<dyn Clock>) -> Self {
        Dashboard {
            sessions: Sessions::new(api_key),
            history: history::History::new(clock),
            secure_cookies: AtomicBool::new(false),
        }
    }

    /// Marks the session cookie `Secure` (the server has a certificate).
    pub fn set_secure_cookies(&self, secure: bool) {
        self.secure_cookies.store(secure, Ordering::Relaxed);
    }

    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies.load(Ordering::Relaxed)
    }
}

/// The dashboard's routes: the pages and their streams behind the login when a key is set;
/// the login form, the stylesheet and the script open.
pub fn routes(state: &AppState) -> axum::Router<AppState> {
    let guarded = axum::Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/events", get(live::overview))
        .route("/ui/jobs", get(pages::jobs))
        .route("/ui/jobs/{id}", get(job::page))
        .route("/ui/jobs/{id}/events", get(live::job))
        .route("/ui/jobs/{id}/results.csv", get(job::csv))
        .route("/ui/jobs/{id}/cancel", post(job::cancel))
        .route("/ui/nodes", get(pages::nodes))
        .route("/ui/nodes/{id}/drain", post(pages::drain))
        .route("/ui/nodes/{id}/undrain", post(pages::undrain))
        .route("/ui/runners", get(pages::runners))
        .route("/ui/placement", get(pages::placement))
        .route("/ui/journal", get(pages::journal))
        .route("/ui/cluster", get(pages::cluster))
        .route("/ui/priority", get(pages::priority))
        .route("/ui/logout", post(pages::logout))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    axum::Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/static/app.js", get(script))
        .route("/ui/static/style.css", get(stylesheet))
        .merge(guarded)
}

/// Lets a request through with its [`Access`] when it may see the dashboard. Otherwise a page
/// is answered by the login form's address (so the browser comes back after logging in), and
/// anything else (a stream, a download, an action) by 401.
async fn guard(State(app): State<AppState>, mut request: Request, next: Next) -> Response {
    let access = app
        .dashboard
        .sessions
        .access(request.headers(), app.clock.now());
    if access == Access::Denied {
        let path = request.uri().path();
        let is_page = request.method() == Method::GET
            && !path.ends_with("/events")
            && !path.ends_with(".csv");
        if is_page {
            let wanted = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/ui");
            let to = format!("/ui/login?next={}", url_escape(wanted));
            return Redirect::to(&to).into_response();
        }
        return UiError::LoginRequired.into_response();
    }
    request.extensions_mut().insert(access);
    next.run(request).await
}

/// Who is looking at a page, as its forms need it: the CSRF token to put in them and whether
/// there is a session to log out of.
pub struct Viewer {
    pub access: Access,
    pub csrf: String,
    pub guarded: bool,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, UiError> {
        let access = parts
            .extensions
            .get::<Access>()
            .cloned()
            .unwrap_or(Access::Denied);
        if access == Access::Denied {
            return Err(UiError::LoginRequired);
        }
        let sessions = &app.dashboard.sessions;
        Ok(Viewer {
            csrf: sessions.csrf_token(&access),
            guarded: sessions.guarded(),
            access,
        })
    }
}

impl Viewer {
    /// Refuses a form whose CSRF token is not this viewer's.
    pub fn check_csrf(&self, app: &AppState, given: &str) -> Result<(), UiError> {
        if app.dashboard.sessions.csrf_matches(&self.access, given) {
            Ok(())
        } else {
            Err(UiError::Csrf)
        }
    }
}

/// Why a dashboard request failed, answered as a small HTML page with its status and code.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// What the native API would answer (not found, finished, unavailable, ...).
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the form was not understood: {0}")]
    BadForm(String),
    #[error(
        "this form is not from this session (it expired, or came from another site): reload the page and try again"
    )]
    Csrf,
    #[error("log in with the server's API key first, at /ui/login")]
    LoginRequired,
}

impl From<drover_store::StoreError> for UiError {
    fn from(e: drover_store::StoreError) -> Self {
        UiError::Api(e.into())
    }
}

impl From<crate::runners::RunnerError> for UiError {
    fn from(e: crate::runners::RunnerError) -> Self {
        UiError::Api(e.into())
    }
}

impl From<crate::priority::RouterError> for UiError {
    fn from(e: crate::priority::RouterError) -> Self {
        match e {
            crate::priority::RouterError::Store(e) => e.into(),
            other => UiError::Api(ApiError::Internal(other.to_string())),
        }
    }
}

impl From<crate::placement::PlacementError> for UiError {
    fn from(e: crate::placement::PlacementError) -> Self {
        match e {
            crate::placement::PlacementError::Store(e) => e.into(),
            // The pages only read: any other refusal would be a fault of the server's own.
            other => UiError::Api(ApiError::Internal(other.to_string())),
        }
    }
}

impl From<axum::extract::rejection::FormRejection> for UiError {
    fn from(e: axum::extract::rejection::FormRejection) -> Self {
        UiError::BadForm(e.body_text())
    }
}

impl UiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            UiError::Api(e) => e.status_and_code(),
            UiError::BadForm(_) => (StatusCode::BAD_REQUEST, "BAD_FORM"),
            UiError::Csrf => (StatusCode::FORBIDDEN, "CSRF_MISMATCH"),
            UiError::LoginRequired => (StatusCode::UNAUTHORIZED, "LOGIN_REQUIRED"),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "dashboard request failed");
        }
        let body = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "drover: " (status.as_u16()) " " (code) }
                    link rel="stylesheet" href="/ui/static/style.css";
                    link rel="icon" href="data:,";
                }
                body {
                    main {
                        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                        p class="error" { code { (code) } ": " (self.to_string()) }
                        p { a href="/ui" { "Back to the overview" } }
                    }
                }
            }
        };
        (status, body).into_response()
    }
}

/// The pages' shared frame: the navigation, the page's own content, and (when the dashboard
/// has a login) the logout form. `events` is the page's live stream, if it has one.
pub fn layout(
    viewer: &Viewer,
    title: &str,
    current: &str,
    events: Option<&str>,
    content: Markup,
) -> Markup {
    const NAV: &[(&str, &str)] = &[
        ("/ui", "Overview"),
        ("/ui/jobs", "Jobs"),
        ("/ui/nodes", "Nodes"),
        ("/ui/runners", "Runners"),
        ("/ui/placement", "Placement"),
        ("/ui/journal", "Journal"),
        ("/ui/cluster", "Cluster"),
        ("/ui/priority", "Priority"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · drover" }
                link rel="stylesheet" href="/ui/static/style.css";
                // No icon to fetch (a browser would ask for /favicon.ico and log its 404).
                link rel="icon" href="data:,";
                script src="/ui/static/app.js" defer {}
            }
            body data-events=[events] {
                header {
                    a class="brand" href="/ui" { "drover" }
                    nav {
                        @for (href, name) in NAV {
                            a href=(href) class=[(*href == current).then_some("current")] { (name) }
                        }
                    }
                    @if viewer.guarded {
                        form method="post" action="/ui/logout" class="logout" {
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// Reads a listing a page at a time through `fetch` until it holds `max` items or none are
/// left; whether more were left. A page shows at most a bounded read, never a whole table.
async fn read_up_to<T, F, Fut>(max: usize, mut fetch: F) -> Result<(Vec<T>, bool), UiError>
where
    F: FnMut(drover_store::Page) -> Fut,
    Fut: std::future::Future<Output = drover_store::Result<drover_store::Paged<T>>>,
{
    let mut items = Vec::new();
    let mut cursor = None;
    loop {
        let page = fetch(drover_store::Page {
            cursor,
            limit: 1000,
        })
        .await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(c) if items.len() < max => cursor = Some(c),
            Some(_) => return Ok((items, true)),
            None => return Ok((items, false)),
        }
    }
}

/// `s` as a query-string value.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const SCRIPT: &str = include_str!("static/app.js");
const STYLESHEET: &str = include_str!("static/style.css");

async fn script() -> Response {
    static_file("text/javascript; charset=utf-8", SCRIPT)
}

async fn stylesheet() -> Response {
    static_file("text/css; charset=utf-8", STYLESHEET)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}
