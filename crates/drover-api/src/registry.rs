//! Wire types of the node-registry contract's HTTP route (`GET /api/nodes`, for its
//! dashboard): a bare array of nodes with snake_case fields, an empty field left out (as its
//! Go server's `omitempty` does).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = registry::Node)]
pub struct Node {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_seen_unix: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_address: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = registry::Capabilities)]
pub struct Capabilities {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cpu: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub memory: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_vram_total: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_vram_available: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub power_usage: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_vram_used: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_temperature: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gpu_power_usage: String,
}
