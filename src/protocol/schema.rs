//! JSON Schema for the params the derive cannot describe alone: names as
//! the daemon accepts them, ids and phases. The choices
//! describe themselves (`choices.rs`), and error kinds and codes beside
//! their table (`errors.rs`). A leaf: it knows no other protocol module.

use schemars::{json_schema, Schema, SchemaGenerator};
use serde_json::json;

/// The longest name (in bytes) the daemon accepts for a domain, image,
/// pool or disk; the schema and the parser share it.
pub const MAX_NAME_LEN: usize = 250;

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
