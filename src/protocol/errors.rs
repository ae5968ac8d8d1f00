//! Error objects on the wire: a stable numeric `code`, a machine-readable
//! `data.kind`, and a `message` a person can act on. The codes are part of
//! the protocol: never renumber one.

use schemars::{json_schema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

macro_rules! error_kinds {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        /// Every error kind the daemon answers with.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind { $(#[doc = $name] $variant,)* }

        impl ErrorKind {
            /// All kinds, for documentation and tests.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant,)*];

            /// The stable JSON-RPC error code.
            pub fn code(self) -> i64 {
                match self { $(ErrorKind::$variant => $code,)* }
            }

            /// The stable `data.kind` string.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorKind::$variant => $name,)* }
            }

            /// The kind named by a `data.kind` string.
            pub fn from_name(name: &str) -> Option<ErrorKind> {
                match name { $($name => Some(ErrorKind::$variant),)* _ => None }
            }
        }
    };
}

error_kinds! {
    ParseError = -32700, "parse_error";
    InvalidRequest = -32600, "invalid_request";
    MethodNotFound = -32601, "method_not_found";
    InvalidParams = -32602, "invalid_params";
    Internal = -32603, "internal";
    RequestTooLarge = -32001, "request_too_large";
    PermissionDenied = -32002, "permission_denied";
    ShuttingDown = -32003, "shutting_down";
    TooManyConnections = -32004, "too_many_connections";
    DomainNotFound = 1001, "domain_not_found";
    DomainNotRunning = 1002, "domain_not_running";
    DiskNotFound = 1003, "disk_not_found";
    DiskNotRbd = 1004, "disk_not_rbd";
    DiskOtherCluster = 1005, "disk_other_cluster";
    PoolNotFound = 1010, "pool_not_found";
    NoDestinationPool = 1011, "no_destination_pool";
    ImageExists = 1012, "image_exists";
    ImageNotFound = 1013, "image_not_found";
    ImageInUse = 1014, "image_in_use";
    NotOurs = 1015, "not_ours";
    SnapshotLimit = 1016, "snapshot_limit";
    Unsupported = 1017, "unsupported";
    AgentUnavailable = 1020, "agent_unavailable";
    FreezeFailed = 1021, "freeze_failed";
    FreezeTimeout = 1022, "freeze_timeout";
    ThawFailed = 1023, "thaw_failed";
    Busy = 1024, "busy";
    JobNotFound = 1025, "job_not_found";
    Cancelled = 1026, "cancelled";
    GuardNotFound = 1027, "guard_not_found";
    LibvirtUnavailable = 1030, "libvirt_unavailable";
    CephUnavailable = 1031, "ceph_unavailable";
    Timeout = 1032, "timeout";
    LibvirtError = 1040, "libvirt_error";
    CephError = 1041, "ceph_error";
}

/// `data.kind` of an error: one of the stable kinds.
fn error_kind_schema(_: &mut SchemaGenerator) -> Schema {
    let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    json_schema!({"type": "string", "enum": kinds})
}

/// An error's `code`: one of the stable codes.
fn error_code_schema(_: &mut SchemaGenerator) -> Schema {
    let codes: Vec<i64> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
    json_schema!({"type": "integer", "enum": codes})
}

/// Machine-readable details of an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ErrorData {
    /// The stable kind name, e.g. `domain_not_found`.
    #[schemars(schema_with = "error_kind_schema")]
    pub kind: String,
    /// The job that failed, when one had started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Undo steps that failed after the error (empty: nothing left behind).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollback_failures: Vec<String>,
    /// The thaw guard on the domain, when the guest may still be frozen:
    /// it keeps thawing, and the domain takes no snapshot until it clears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<Box<GuardData>>,
}

/// A thaw guard, as error data shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GuardData {
    /// The domain that may be frozen.
    pub domain_uuid: String,
    /// The job whose freeze is not confirmed undone.
    pub job_id: String,
    /// Unix seconds of that freeze attempt.
    pub since_unix: u64,
    /// Why the thaw is not confirmed yet.
    pub last_error: String,
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RpcError {
    /// Stable numeric code (see [`ErrorKind::code`]).
    #[schemars(schema_with = "error_code_schema")]
    pub code: i64,
    /// What happened and, where possible, what to do about it.
    pub message: String,
    /// The kind and details.
    pub data: ErrorData,
}

impl RpcError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RpcError {
            code: kind.code(),
            message: message.into(),
            data: ErrorData {
                kind: kind.as_str().to_string(),
                ..Default::default()
            },
        }
    }

    /// The kind, as parsed back from `data.kind`.
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::from_name(&self.data.kind).unwrap_or(ErrorKind::Internal)
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.data.kind)
    }
}

impl std::error::Error for RpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(codes.insert(kind.code()), "{kind:?} reuses a code");
            assert_eq!(ErrorKind::from_name(kind.as_str()), Some(*kind));
        }
    }
}
