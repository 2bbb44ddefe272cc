//! Who may call what: the agent key on `/internal/v1`, the API key on `/api/v1`, `/metrics` and
//! the runner routes, a spot's own secret on every call that acts for that spot, and a runner's
//! session token in place of the API key on its own runner's calls.
//!
//! Keys and secrets are compared in constant time. The rules of who may act for a spot or a
//! runner are `drover_core::credential`'s; this module reads the headers, asks the store for
//! the stored hash, and turns a refusal into an [`ApiError`] whose message says what to send.
//!
//! Headers: `X-Orhestra-Key` or `X-Agent-Key` (agent key), `Authorization: Bearer` (API key),
//! `X-Spot-Secret` (the secret `hello` returned as `spotSecret`; with `X-Spot-Id` on the job
//! read agents make), `X-Runner-Token` (the token provision returned as `sessionToken`).

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use drover_core::credential::{self, Refusal};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The header that carries a spot's secret.
pub const SPOT_SECRET_HEADER: &str = "x-spot-secret";
/// The header that names the spot whose secret a request outside `/internal/v1` carries.
pub const SPOT_ID_HEADER: &str = "x-spot-id";
/// The header that carries a runner's session token.
pub const RUNNER_TOKEN_HEADER: &str = "x-runner-token";

pub(crate) fn keys_match(given: &str, expected: &str) -> bool {
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// What a request's API key header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Right,
    Wrong,
    Absent,
}

fn api_key(headers: &HeaderMap, expected: &str) -> Key {
    let given = header(headers, "authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    });
    match given {
        Some(given) if keys_match(given.trim(), expected) => Key::Right,
        Some(_) => Key::Wrong,
        None => Key::Absent,
    }
}

fn agent_key(headers: &HeaderMap, expected: &str) -> Key {
    match header(headers, "x-orhestra-key").or_else(|| header(headers, "x-agent-key")) {
        Some(given) if keys_match(given, expected) => Key::Right,
        Some(_) => Key::Wrong,
        None => Key::Absent,
    }
}

fn api_key_refusal(key: Key) -> ApiError {
    match key {
        Key::Wrong => ApiError::Unauthorized("invalid API key".into()),
        _ => ApiError::Unauthorized(
            "missing API key: send it as 'Authorization: Bearer <key>'".into(),
        ),
    }
}

/// The agent key of the batch contract (`X-Orhestra-Key`), or drover's own `X-Agent-Key`.
pub async fn require_agent_key(
    State(key): State<Arc<Option<String>>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = key.as_deref() {
        match agent_key(request.headers(), expected) {
            Key::Right => {}
            Key::Wrong => return Err(ApiError::Unauthorized("invalid agent key".into())),
            Key::Absent => {
                return Err(ApiError::Unauthorized(
                    "missing agent key: send it in the X-Orhestra-Key (or X-Agent-Key) header"
                        .into(),
                ));
            }
        }
    }
    Ok(next.run(request).await)
}

/// When the API key is needed on a route group.
#[derive(Debug, Clone)]
pub struct ApiKeyRule {
    /// The configured key; `None` leaves the group open.
    pub key: Option<String>,
    /// Whether reads (GET, HEAD, OPTIONS) need it too: yes unless `--public-reads`.
    pub reads: bool,
}

impl ApiKeyRule {
    pub fn of(config: &crate::ServerConfig) -> Arc<Self> {
        Arc::new(ApiKeyRule {
            key: config.api_key.clone(),
            reads: !config.public_reads,
        })
    }
}

fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `Authorization: Bearer <key>` on every request of the group when a key is configured, reads
/// excepted under `--public-reads`.
pub async fn require_api_key(
    State(rule): State<Arc<ApiKeyRule>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(expected) = rule.key.as_deref()
        && (rule.reads || !is_read(request.method()))
    {
        match api_key(request.headers(), expected) {
            Key::Right => {}
            other => return Err(api_key_refusal(other)),
        }
    }
    Ok(next.run(request).await)
}

/// Who reads a job, which decides whether its `env` values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobReader {
    /// An agent (the configured agent key, or a registered spot's own secret): sees the values
    /// it needs to run the job's tasks.
    Agent,
    /// Anyone else: `env` values are redacted.
    Client,
}

/// The job read (`GET /api/v1/jobs/{id}`), which agents make to learn a job's command: the API
/// key where reads need it, or the agent key, or a spot's own secret (`X-Spot-Id` and
/// `X-Spot-Secret`). Marks the request with its [`JobReader`].
pub async fn authorise_job_read(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let config = &app.config;
    let by_agent_key = config
        .agent_key
        .as_deref()
        .is_some_and(|k| agent_key(headers, k) == Key::Right);
    // A spot credential that is sent must be right, so an agent is never handed a redacted
    // job to run; it is not looked at when the agent key already says who reads.
    let by_spot = match (header(headers, SPOT_ID_HEADER), spot_secret(headers)) {
        _ if by_agent_key => false,
        (Some(spot), Some(secret)) => {
            match app.spot_credentials.get(&app.store, spot.trim()).await? {
                credential::SpotCredential::Issued { hash }
                    if credential::matches(&hash, secret) =>
                {
                    true
                }
                _ => {
                    return Err(ApiError::SpotCredential {
                        refusal: Refusal::Wrong,
                        spot: spot.trim().to_string(),
                    });
                }
            }
        }
        _ => false,
    };
    let reader = if by_agent_key || by_spot {
        JobReader::Agent
    } else {
        if let Some(expected) = config.api_key.as_deref()
            && !config.public_reads
        {
            match api_key(headers, expected) {
                Key::Right => {}
                other => return Err(api_key_refusal(other)),
            }
        }
        JobReader::Client
    };
    request.extensions_mut().insert(reader);
    Ok(next.run(request).await)
}

/// Spot credentials read from the store, kept in memory. A spot's credential is fixed when it
/// registers (its id is the server's, and a spot that registers again gets a new one), so a
/// cached answer never goes stale in a way that lets a call through: the store still answers
/// every call for a spot it has forgotten. Without it, every heartbeat, claim and report would
/// pay one more store round-trip before its own. Unknown spots are not kept, so made-up ids
/// cannot fill it; it is emptied if it ever holds more than [`CredentialCache::MAX`] spots.
#[derive(Default)]
pub struct CredentialCache {
    known: std::sync::RwLock<std::collections::HashMap<String, credential::SpotCredential>>,
}

impl CredentialCache {
    pub const MAX: usize = 100_000;

    /// The spot's credential, from memory or else from the store.
    pub async fn get(
        &self,
        store: &drover_store::Stores,
        spot: &str,
    ) -> Result<credential::SpotCredential, drover_store::StoreError> {
        if let Some(known) = self
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(spot)
        {
            return Ok(known.clone());
        }
        let stored = store.nodes.spot_credential(spot).await?;
        if stored != credential::SpotCredential::UnknownSpot {
            let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
            if known.len() >= Self::MAX {
                known.clear();
            }
            known.insert(spot.to_string(), stored.clone());
        }
        Ok(stored)
    }
}

/// The secret a request carries for a spot, if any.
pub fn spot_secret(headers: &HeaderMap) -> Option<&str> {
    header(headers, SPOT_SECRET_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The `X-Spot-Secret` a request carries, if any, taken from its headers without copying the
/// rest of them (a heartbeat's only header of interest).
pub struct SpotSecret(Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SpotSecret {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(SpotSecret(spot_secret(&parts.headers).map(str::to_string)))
    }
}

/// Whether a call carrying `secret` may act for `spot` (heartbeat, claim, complete, fail), by
/// `drover_core::credential::may_act_for_spot`.
pub async fn authorise_spot(
    app: &AppState,
    secret: &SpotSecret,
    spot: &str,
) -> Result<(), ApiError> {
    let stored = app.spot_credentials.get(&app.store, spot).await?;
    credential::may_act_for_spot(
        &stored,
        secret.0.as_deref(),
        app.config.require_node_credentials,
    )
    .map_err(|refusal| ApiError::SpotCredential {
        refusal,
        spot: spot.to_string(),
    })
}

/// Whether a call carrying `headers` may act for a runner whose token hash is `stored` (its
/// deprovision or heartbeat), by `drover_core::credential::may_act_for_runner`. `None` when no
/// runner is recorded: the service then answers as the contract says for an unknown session.
pub fn authorise_runner(
    config: &crate::ServerConfig,
    headers: &HeaderMap,
    stored: Option<&str>,
) -> Result<(), ApiError> {
    let key = config.api_key.as_deref().map(|k| api_key(headers, k));
    let token = header(headers, RUNNER_TOKEN_HEADER)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    match credential::may_act_for_runner(stored, token, key.is_some(), key == Some(Key::Right)) {
        Ok(()) => Ok(()),
        Err(Refusal::Missing) => Err(match key {
            Some(Key::Wrong) => ApiError::Unauthorized(
                "invalid API key: send the API key as 'Authorization: Bearer <key>', or the \
                 runner's sessionToken in X-Runner-Token"
                    .into(),
            ),
            _ => ApiError::Unauthorized(
                "missing API key: send it as 'Authorization: Bearer <key>', or the runner's \
                 sessionToken (from its provision answer) in X-Runner-Token"
                    .into(),
            ),
        }),
        Err(refusal) => Err(ApiError::RunnerToken(refusal)),
    }
}

/// Whether a request carries the configured API key (`false` when none is configured): who
/// may see the session ids and endpoints of runners.
pub fn holds_api_key(config: &crate::ServerConfig, headers: &HeaderMap) -> bool {
    config
        .api_key
        .as_deref()
        .is_some_and(|k| api_key(headers, k) == Key::Right)
}

/// A fresh secret (a spot's or a runner's): 256 bits from the operating system, as text, with
/// the hash to store.
pub fn new_secret() -> Result<(String, String), ApiError> {
    let mut random = [0u8; credential::SECRET_BYTES];
    getrandom::fill(&mut random)
        .map_err(|e| ApiError::Internal(format!("no randomness for a secret: {e}")))?;
    let secret = credential::secret_text(&random);
    let hash = credential::hash(&secret);
    Ok((secret, hash))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
