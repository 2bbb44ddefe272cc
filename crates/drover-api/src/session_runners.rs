//! Wire types of the session-runners contract (`/api/runner/*`): its success bodies and its own
//! error shape `{"error": CODE, "message": ..., "details"?}`, which differs from the native
//! API's [`crate::ErrorBody`].

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The answer to a provision: 201 when this call started the runner, 200 when it existed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = session_runners::Provisioned)]
#[serde(rename_all = "camelCase")]
pub struct Provisioned {
    pub message: String,
    pub endpoint: String,
    pub session_id: String,
    /// The runner's own session token, given once, by the call that started it: it stands in
    /// for the API key on this runner's deprovision and heartbeat (`X-Runner-Token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
}

/// The answer to a deprovision or a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = session_runners::Message)]
pub struct Message {
    pub message: String,
}

/// The contract's error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = session_runners::ContractError)]
pub struct ContractError {
    pub error: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}
