//! The protocol as an OpenRPC document (the JSON-RPC counterpart of
//! OpenAPI), served by `rpc.discover` and kept in `docs/openrpc.json`.
//!
//! It is generated, not written: each method's params and result schemas
//! come from the Rust types that parse the params ([`crate::protocol`]) and
//! build the results ([`crate::daemon::results`], the job and snapshot
//! records), through schemars. Params are described as deserialized
//! (defaults make a field optional), results as serialized. What the
//! derive cannot know (string choices, name rules) comes from
//! [`crate::protocol::schema`], which shares its constants with the
//! validation.
//!
//! OpenRPC has no server-to-client notifications: the `progress`
//! notification is described under the `x-notifications` extension, its
//! params as the `ProgressParams` schema.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::daemon::results::{
    Cancelled, CreateResult, DaemonStatus, Deleted, Dismissed, DomainDisks, JobList,
};
use crate::daemon::JobRecord;
use crate::protocol::{
    CreateParams, DeleteParams, DomainParams, ErrorKind, GuardParams, JobParams, NoParams,
    ProgressParams, RpcError,
};

/// The OpenRPC version the document follows.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// Where the shared schemas live in the document.
const SCHEMAS: &str = "/components/schemas";

/// The id of the OpenRPC meta-schema, which `rpc.discover`'s result follows.
pub const META_SCHEMA_ID: &str = "https://meta.open-rpc.org/";

/// One method as the document describes it.
struct Method {
    name: &'static str,
    summary: &'static str,
    /// The params' type, as a root schema (its properties become the
    /// content descriptors).
    params: fn(&mut SchemaGenerator) -> Schema,
    /// The result's schema.
    result: fn(&mut SchemaGenerator) -> Schema,
    /// The error kinds it answers with, besides [`COMMON_ERRORS`].
    errors: &'static [ErrorKind],
}

/// Errors any request may get: the request itself is wrong, the caller
/// may not, or the daemon is stopping or full.
pub const COMMON_ERRORS: &[ErrorKind] = &[
    ErrorKind::ParseError,
    ErrorKind::InvalidRequest,
    ErrorKind::MethodNotFound,
    ErrorKind::InvalidParams,
    ErrorKind::Internal,
    ErrorKind::RequestTooLarge,
    ErrorKind::PermissionDenied,
    ErrorKind::ShuttingDown,
    ErrorKind::TooManyConnections,
];

const CREATE_ERRORS: &[ErrorKind] = &[
    ErrorKind::DomainNotFound,
    ErrorKind::DomainNotRunning,
    ErrorKind::DiskNotFound,
    ErrorKind::DiskNotRbd,
    ErrorKind::DiskOtherCluster,
    ErrorKind::PoolNotFound,
    ErrorKind::NoDestinationPool,
    ErrorKind::ImageExists,
    ErrorKind::SnapshotLimit,
    ErrorKind::Unsupported,
    ErrorKind::AgentUnavailable,
    ErrorKind::FreezeFailed,
    ErrorKind::FreezeTimeout,
    ErrorKind::ThawFailed,
    ErrorKind::Busy,
    ErrorKind::Cancelled,
    ErrorKind::LibvirtUnavailable,
    ErrorKind::CephUnavailable,
    ErrorKind::Timeout,
    ErrorKind::LibvirtError,
    ErrorKind::CephError,
];

const DELETE_ERRORS: &[ErrorKind] = &[
    ErrorKind::ImageNotFound,
    ErrorKind::ImageExists,
    ErrorKind::ImageInUse,
    ErrorKind::NotOurs,
    ErrorKind::SnapshotLimit,
    ErrorKind::Cancelled,
    ErrorKind::CephUnavailable,
    ErrorKind::CephError,
];

const DOMAIN_ERRORS: &[ErrorKind] = &[
    ErrorKind::DomainNotFound,
    ErrorKind::DomainNotRunning,
    ErrorKind::AgentUnavailable,
    ErrorKind::Timeout,
    ErrorKind::LibvirtUnavailable,
    ErrorKind::LibvirtError,
];

fn root<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<T>()
}

fn sub<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

fn metrics_text(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "the Prometheus text exposition format (version 0.0.4)"
    })
}

fn openrpc_document(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"$ref": META_SCHEMA_ID})
}

const METHODS: &[Method] = &[
    Method {
        name: "snapshot.create",
        summary: "Snapshot a running domain's disks into new RBD images, the guest frozen only around the temporary snapshots",
        params: root::<CreateParams>,
        result: sub::<CreateResult>,
        errors: CREATE_ERRORS,
    },
    Method {
        name: "snapshot.delete",
        summary: "Delete an image this host's rbdsnapd made, when nothing depends on it",
        params: root::<DeleteParams>,
        result: sub::<Deleted>,
        errors: DELETE_ERRORS,
    },
    Method {
        name: "jobs.list",
        summary: "Running, queued and recent jobs",
        params: root::<NoParams>,
        result: sub::<JobList>,
        errors: &[],
    },
    Method {
        name: "jobs.get",
        summary: "One job: its phase, progress and outcome",
        params: root::<JobParams>,
        result: sub::<JobRecord>,
        errors: &[ErrorKind::JobNotFound],
    },
    Method {
        name: "jobs.cancel",
        summary: "Stop a running job at its next safe point",
        params: root::<JobParams>,
        result: sub::<Cancelled>,
        errors: &[ErrorKind::JobNotFound],
    },
    Method {
        name: "domain.disks",
        summary: "A domain's disks and their sources, as libvirt describes them",
        params: root::<DomainParams>,
        result: sub::<DomainDisks>,
        errors: DOMAIN_ERRORS,
    },
    Method {
        name: "daemon.status",
        summary: "Backends, jobs, recovery, guests at risk and counters",
        params: root::<NoParams>,
        result: sub::<DaemonStatus>,
        errors: &[],
    },
    Method {
        name: "guard.dismiss",
        summary: "End the thaw guard of a guest an operator checked where it runs now",
        params: root::<GuardParams>,
        result: sub::<Dismissed>,
        errors: &[ErrorKind::GuardNotFound, ErrorKind::PermissionDenied],
    },
    Method {
        name: "metrics",
        summary: "The daemon's metrics in the Prometheus text format",
        params: root::<NoParams>,
        result: metrics_text,
        errors: &[],
    },
    Method {
        name: "rpc.discover",
        summary: "This document",
        params: root::<NoParams>,
        result: openrpc_document,
        errors: &[],
    },
];

/// The methods the document describes, in its order.
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

/// The error kinds `method` may answer with.
pub fn errors_of(method: &str) -> Vec<ErrorKind> {
    let own = METHODS
        .iter()
        .find(|m| m.name == method)
        .map_or(&[][..], |m| m.errors);
    COMMON_ERRORS.iter().chain(own).copied().collect()
}

fn generator(serialize: bool) -> SchemaGenerator {
    let settings = SchemaSettings::draft07().with(|s| s.definitions_path = SCHEMAS.into());
    if serialize {
        settings.for_serialize().into_generator()
    } else {
        settings.for_deserialize().into_generator()
    }
}

/// A params root schema as content descriptors, one per property.
fn content_descriptors(params: Schema) -> Vec<Value> {
    let params = params.to_value();
    let required: Vec<&str> = params["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = params["properties"].as_object() else {
        return Vec::new();
    };
    // required ones first, each group by name
    let mut names: Vec<&String> = properties.keys().collect();
    names.sort_by_key(|name| (!required.contains(&name.as_str()), name.as_str()));
    names
        .into_iter()
        .map(|name| (name, &properties[name]))
        .map(|(name, schema)| {
            let mut descriptor = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(text) = schema.get("description") {
                descriptor["description"] = text.clone();
            }
            descriptor
        })
        .collect()
}

fn error_ref(kind: ErrorKind) -> Value {
    json!({"$ref": format!("#/components/errors/{}", kind.as_str())})
}

fn method(m: &Method, params_gen: &mut SchemaGenerator, result_gen: &mut SchemaGenerator) -> Value {
    let errors: Vec<Value> = COMMON_ERRORS
        .iter()
        .chain(m.errors)
        .map(|k| error_ref(*k))
        .collect();
    json!({
        "name": m.name,
        "summary": m.summary,
        "paramStructure": "by-name",
        "params": content_descriptors((m.params)(params_gen)),
        "result": {"name": format!("{} result", m.name), "schema": (m.result)(result_gen)},
        "errors": errors,
    })
}

/// Every error kind, once: its stable code, its kind as the message, and
/// the error object's schema as `data`'s.
fn error_components() -> Map<String, Value> {
    ErrorKind::ALL
        .iter()
        .map(|k| {
            let object = json!({"code": k.code(), "message": k.as_str()});
            (k.as_str().to_string(), object)
        })
        .collect()
}

/// Both generators' definitions as one map; a name defined differently by
/// the two would be a type described two ways, which must not happen.
fn merge(params: Map<String, Value>, results: Map<String, Value>) -> Map<String, Value> {
    let mut all = results;
    for (name, schema) in params {
        match all.get(&name) {
            Some(existing) if existing != &schema => {
                // keep both, the params one under its own name
                all.insert(format!("{name}Params"), schema);
            }
            _ => {
                all.insert(name, schema);
            }
        }
    }
    all
}

/// The whole document.
pub fn document() -> Value {
    let (mut params_gen, mut result_gen) = (generator(false), generator(true));
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| method(m, &mut params_gen, &mut result_gen))
        .collect();
    // referenced by the notification and by tests that check messages
    result_gen.subschema_for::<ProgressParams>();
    result_gen.subschema_for::<RpcError>();
    let schemas = merge(
        params_gen.take_definitions(true),
        result_gen.take_definitions(true),
    );
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "rbdsnapd",
            "version": env!("CARGO_PKG_VERSION"),
            "description": INFO,
            "license": {"name": env!("CARGO_PKG_LICENSE")},
        },
        "servers": [{
            "name": "the node's socket",
            "url": "unix:///run/rbdsnapd/rbdsnapd.sock",
            "summary": "JSON-RPC 2.0 over a Unix stream socket, one JSON object per line",
        }],
        "methods": methods,
        "components": {
            "schemas": schemas,
            "errors": error_components(),
        },
        "x-notifications": [{
            "name": crate::protocol::PROGRESS,
            "summary": "Progress of a snapshot.create, sent on its connection before its answer",
            "params": {"$ref": "#/components/schemas/ProgressParams"},
        }],
        "x-error-object": {"$ref": "#/components/schemas/RpcError"},
    })
}

const INFO: &str = "Quiesced RBD direct snapshots of running libvirt/QEMU guests. \
Requests are JSON-RPC 2.0 objects, one per line, on the node's Unix socket; several \
may be in flight on one connection, answered by id (echoed exactly as sent). Errors \
carry a stable code and data.kind (the RpcError schema); long work sends progress \
notifications (x-notifications) before its answer.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_the_daemon_answers_is_described() {
        assert_eq!(method_names(), crate::protocol::METHODS);
    }

    #[test]
    fn phases_are_the_workflow_s() {
        use crate::snapshot::Phase;
        let phases: Vec<String> = [
            Phase::Preflight,
            Phase::Freeze,
            Phase::Clone,
            Phase::Queued,
            Phase::Flatten,
            Phase::Finish,
            Phase::Rollback,
        ]
        .iter()
        .map(|p| {
            serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
        })
        .map(Option::unwrap_or_default)
        .collect();
        assert_eq!(phases, crate::protocol::schema::PHASES);
    }

    #[test]
    fn params_and_results_are_described_by_their_types() {
        let doc = document();
        let create = &doc["methods"][0];
        assert_eq!(create["name"], "snapshot.create");
        let names: Vec<&str> = create["params"]
            .as_array()
            .expect("params")
            .iter()
            .map(|p| p["name"].as_str().unwrap_or_default())
            .collect();
        for name in [
            "domain",
            "image",
            "pool",
            "disks",
            "quiesce",
            "flatten",
            "on_busy",
            "request_id",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let required: Vec<&str> = create["params"]
            .as_array()
            .expect("params")
            .iter()
            .filter(|p| p["required"] == true)
            .map(|p| p["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(required, ["domain", "image"]);
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for name in [
            "SnapshotResult",
            "JobRecord",
            "DaemonStatus",
            "ProgressParams",
            "RpcError",
        ] {
            assert!(schemas.contains_key(name), "{name} not in components");
        }
        assert!(
            !schemas
                .keys()
                .any(|k| k.ends_with("Params") && k != "ProgressParams"),
            "a type described two ways: {:?}",
            schemas.keys().collect::<Vec<_>>()
        );
    }
}
