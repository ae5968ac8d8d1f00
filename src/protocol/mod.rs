//! The wire contract of the daemon's socket: JSON-RPC 2.0, one JSON object
//! per line (`\n`), several requests in flight per connection, answered by
//! `id`. Long work sends `progress` notifications before its result.
//!
//! Nothing but types lives here: [`Request`] envelopes, the typed
//! [`Call`] every method's params parse into (fully, unknown fields
//! rejected, names validated) before anything acts, and [`RpcError`] with
//! its stable codes and kinds ([`ErrorKind`]).

mod choices;
mod errors;
mod params;
pub mod schema;

pub use choices::{Flatten, OnBusy, Quiesce};
pub use errors::{ErrorKind, GuardData, RpcError};
pub use params::*;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version string every message carries.
pub const JSONRPC: &str = "2.0";

/// Name of the notification method that reports progress.
pub const PROGRESS: &str = "progress";

/// A request as read from the wire, before its params are understood.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Must be "2.0".
    pub jsonrpc: String,
    /// Number or string; absent for a notification (which gets no answer).
    #[serde(default)]
    pub id: Option<Value>,
    /// Method name.
    pub method: String,
    /// Method parameters (an object).
    #[serde(default)]
    pub params: Option<Value>,
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    /// "2.0".
    pub jsonrpc: String,
    /// The request's id.
    pub id: Value,
    /// The method's result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, when the request failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

impl Response {
    /// A result for `id`.
    pub fn ok(id: Value, result: Value) -> Self {
        Response {
            jsonrpc: JSONRPC.into(),
            id,
            result: Some(result),
            error: None,
        }
    }

    /// An error for `id` (`null` when the request's id could not be read).
    pub fn err(id: Value, error: RpcError) -> Self {
        Response {
            jsonrpc: JSONRPC.into(),
            id,
            result: None,
            error: Some(error),
        }
    }
}

/// A progress notification, sent before the result of the request `id`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ProgressParams {
    /// The id of the request this reports on.
    #[schemars(schema_with = "schema::id")]
    pub id: Value,
    /// The job doing the work.
    pub job_id: String,
    /// Workflow phase (`preflight`, `freeze`, `clone`, `queued`, `flatten`,
    /// `finish`, `rollback`).
    #[schemars(schema_with = "schema::phase")]
    pub phase: String,
    /// Units done in this phase (bytes for `flatten`).
    pub done: u64,
    /// Units in this phase (0 when unknown).
    pub total: u64,
    /// In phase `queued`: the place in the host's flatten queue, 1 = next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
}

/// A notification as written to the wire.
#[derive(Debug, Serialize, Deserialize)]
pub struct Notification<P> {
    /// "2.0".
    pub jsonrpc: String,
    /// Always [`PROGRESS`] today.
    pub method: String,
    /// What it reports.
    pub params: P,
}

impl Notification<ProgressParams> {
    /// A progress notification.
    pub fn progress(params: ProgressParams) -> Self {
        Notification {
            jsonrpc: JSONRPC.into(),
            method: PROGRESS.into(),
            params,
        }
    }
}
