//! JSON Schema for the params the derive cannot describe alone: names as
//! the daemon accepts them, ids, errors and phases. The choices
//! describe themselves (`choices.rs`).

use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::json;

use super::params::MAX_NAME_LEN;
use super::ErrorKind;

/// A domain, image, pool or disk name. JSON Schema counts characters and
/// the daemon bytes, so the byte limit is in the description only.
fn name_schema() -> serde_json::Value {
    json!({
        "type": "string",
        "minLength": 1,
        "pattern": "^[^/@\\u0000-\\u001f\\u007f-\\u009f]+$",
        "not": {"enum": [".", ".."]},
        "description": format!(
            "1-{MAX_NAME_LEN} bytes, without '/', '@' or control characters, not '.' or '..'"
        ),
    })
}

/// A required name.
pub fn name(_: &mut SchemaGenerator) -> Schema {
    Schema::try_from(name_schema()).unwrap_or_default()
}

/// An optional name (null allowed).
pub fn optional_name(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"anyOf": [name_schema(), {"type": "null"}]})
}

/// A list of names.
pub fn names(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": name_schema()})
}

/// `request_id`: 1-128 characters without control characters.
pub fn request_id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"},
        {"type": "null"}
    ]})
}

/// `data.kind` of an error: one of the stable kinds.
pub fn error_kind(_: &mut SchemaGenerator) -> Schema {
    let kinds: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
    json_schema!({"type": "string", "enum": kinds})
}

/// An error's `code`: one of the stable codes.
pub fn error_code(_: &mut SchemaGenerator) -> Schema {
    let codes: Vec<i64> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
    json_schema!({"type": "integer", "enum": codes})
}

/// A `snapshot.delete` location.
pub fn location(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"anyOf": [
        {"type": "string", "pattern": "^rbd://[^/]+/[^/]+/[^/]+/[^/]+$"},
        {"type": "null"}
    ]})
}

/// The phases progress notifications name, in workflow order.
pub const PHASES: &[&str] = &[
    "preflight",
    "freeze",
    "clone",
    "queued",
    "flatten",
    "finish",
    "rollback",
];

/// A progress notification's `phase`.
pub fn phase(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": PHASES})
}

/// A JSON-RPC id as requests carry it: a string or a number.
pub fn id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": ["string", "number"]})
}
