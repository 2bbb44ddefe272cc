//! The OpenAPI 3.1 document of a listener, `GET /api/v1/openapi.json`: every route of the
//! surfaces that listener serves, with its request, response and error schemas and the key it
//! needs. It owns the document's frame (title, version, the security schemes, the error bodies
//! every surface shares); it must not describe a route by hand: each route's path item comes
//! from its handler's `#[utoipa::path]`.
//!
//! Why the document cannot leave a route out: every surface mounts its routes through
//! `utoipa_axum`'s `OpenApiRouter::routes(routes!(handler))`, which takes the path and the
//! methods from the handler's annotation and registers that one path item in the document and
//! that one method router in axum together; there is no second list to forget. Two things
//! could still slip past it, and the tests hold both: a route mounted with a plain
//! `.route(...)` (or nested, or as a service) beside the documented ones, which
//! `routes_are_mounted_only_with_their_documentation` in the API tests (`tests/api/openapi.rs`)
//! refuses by reading the server's sources; and a path or method the router serves differently
//! from the document, which `every_documented_route_is_served_and_no_other_method_on_its_paths`
//! finds by calling each documented method and path on a live server (anything but the router's
//! own 404 or 405 is served) and each undocumented method of a documented path (the router's
//! 405).
//!
//! The document is built once per listener, when its router is, and served as it was built:
//! it describes the surfaces mounted on that listener and nothing else, so the main listener's
//! and a metrics listener's documents differ (their `/health` and `/metrics` are different
//! routes on different listeners). It is open, like health: it says what the routes are, never
//! what the server holds.

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The names of the security schemes, as routes' `security(...)` name them.
pub const API_KEY: &str = "apiKey";
pub const AGENT_KEY: &str = "agentKey";
pub const ORHESTRA_KEY: &str = "orhestraKey";
pub const SPOT_ID: &str = "spotId";
pub const SPOT_SECRET: &str = "spotSecret";
pub const RUNNER_TOKEN: &str = "runnerToken";

/// The path the document is served at, on every listener.
pub const PATH: &str = "/api/v1/openapi.json";

/// The document's frame: title, version, security schemes and the shared error bodies; the
/// paths are added by the surfaces' routers.
pub fn frame() -> OpenApi {
    let mut doc = <Frame as utoipa::OpenApi>::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    let header = |name: &str, description: &str| {
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            name,
            description,
        )))
    };
    let schemes = [
        (
            API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The API key (`--api-key`), as `Authorization: Bearer <key>`. Needed by \
                         clients' writes, and reads too unless the server runs with \
                         `--public-reads`; a server without an API key needs none.",
                    ))
                    .build(),
            ),
        ),
        (
            AGENT_KEY,
            header(
                "X-Agent-Key",
                "The agent key (`--agent-key`), needed by what agents and nodes send; a server \
                 without one needs none. `X-Orhestra-Key` carries the same key.",
            ),
        ),
        (
            ORHESTRA_KEY,
            header(
                "X-Orhestra-Key",
                "The agent key under the batch-coordinator contract's header name.",
            ),
        ),
        (
            SPOT_ID,
            header(
                "X-Spot-Id",
                "The spot whose secret `X-Spot-Secret` carries, on the job read agents make.",
            ),
        ),
        (
            SPOT_SECRET,
            header(
                "X-Spot-Secret",
                "A spot's own secret, the `spotSecret` its hello returned: every call for a \
                 spot that has one must carry it.",
            ),
        ),
        (
            RUNNER_TOKEN,
            header(
                "X-Runner-Token",
                "A runner's session token, the `sessionToken` its provision returned: it stands \
                 in for the API key on that runner's deprovision and heartbeat.",
            ),
        ),
    ];
    for (name, scheme) in schemes {
        components.add_security_scheme(name, scheme);
    }
    doc
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "drover",
        description = "drover's HTTP API: the native batch API (`/api/v1`, `/internal/v1`, \
                       `/metrics`) and the contracts it serves (session runners, placement, node \
                       registry, priority queue), as far as this listener serves them. Each \
                       surface answers errors in its own contract's shape; the key checks and \
                       the router's own 404 and 405 answer in the native one \
                       (`{\"success\": false, \"error\", \"code\"}`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    // The error bodies the surfaces' `Refusals` refer to: responses listed by type do not
    // bring their schemas along as bodies named in a path's annotation do.
    components(schemas(
        drover_api::ErrorBody,
        drover_api::placement::ErrorBody,
        drover_api::priority::ErrorBody,
        drover_api::session_runners::ContractError
    ))
)]
struct Frame;

/// The rendered document, handed to [`document`] by the listener's router.
#[derive(Clone)]
pub struct Rendered(pub Bytes);

impl Rendered {
    pub fn of(doc: &OpenApi) -> Rendered {
        // Serialising a document of plain maps and strings cannot fail; an empty body would
        // show it did.
        Rendered(Bytes::from(serde_json::to_vec(doc).unwrap_or_default()))
    }
}

/// This listener's OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "native",
    responses((status = 200, description = "The OpenAPI 3.1 document of this listener's routes",
               content_type = "application/json", body = Object))
)]
pub async fn document(Extension(doc): Extension<Rendered>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}
