//! Each method's params, parsed fully and validated before any action: a
//! request that names an image `a/b`, carries an unknown field or a wrong
//! type never reaches the workflow.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::schema::{self, MAX_NAME_LEN};
use super::{ErrorKind, Flatten, OnBusy, Quiesce, RpcError};

/// `snapshot.create`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// Domain name or UUID.
    #[schemars(schema_with = "schema::name")]
    pub domain: String,
    /// New image name (with several disks: `<image>-<disk>` each).
    #[schemars(schema_with = "schema::name")]
    pub image: String,
    /// Destination pool (default: the source's parent pool, then the
    /// configured default).
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_name")]
    pub pool: Option<String>,
    /// Target devs (default: the boot disk; several: one freeze).
    #[serde(default)]
    #[schemars(schema_with = "schema::names")]
    pub disks: Vec<String>,
    /// `required` | `preferred` | `off` (default: the configured one).
    #[serde(default)]
    pub quiesce: Option<Quiesce>,
    /// `sync` | `background` | `cluster` | `none` (default `sync`).
    #[serde(default)]
    pub flatten: Option<Flatten>,
    /// When the domain already has a snapshot running: `reject` (answer
    /// `busy`) or `wait` for it to end (default: the configured one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_busy: Option<OnBusy>,
    /// Idempotency key: a retry with the same key (and the same params)
    /// returns the first result or joins the running job.
    #[serde(default)]
    #[schemars(schema_with = "schema::request_id")]
    pub request_id: Option<String>,
}

/// `snapshot.delete`: by pool and image, or by the location create returned.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Pool of the image.
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_name")]
    pub pool: Option<String>,
    /// Image name.
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_name")]
    pub image: Option<String>,
    /// `rbd://<fsid>/<pool>/<image>/snap`, instead of pool + image; its
    /// fsid must be this daemon's cluster.
    #[serde(default)]
    #[schemars(schema_with = "schema::location")]
    pub location: Option<String>,
}

/// `jobs.get`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobParams {
    /// The job id a `snapshot.create` result or progress carried.
    pub job_id: String,
}

/// `domain.disks`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainParams {
    /// Domain name or UUID.
    #[schemars(schema_with = "schema::name")]
    pub domain: String,
}

/// `guard.dismiss`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuardParams {
    /// The guarded domain's UUID, as `daemon.status` `guests_at_risk[]`
    /// names it.
    #[schemars(schema_with = "schema::name")]
    pub domain_uuid: String,
}

/// Methods without params (`jobs.list`, `daemon.status`) accept none or `{}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// A request understood: the method and its validated params.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `snapshot.create`.
    SnapshotCreate(CreateParams),
    /// `snapshot.delete`, resolved to pool and image.
    SnapshotDelete {
        /// Pool.
        pool: String,
        /// Image.
        image: String,
        /// The cluster a location named; it must be the daemon's.
        fsid: Option<String>,
    },
    /// `jobs.list`.
    JobsList,
    /// `jobs.get`.
    JobsGet(JobParams),
    /// `jobs.cancel`.
    JobsCancel(JobParams),
    /// `domain.disks`.
    DomainDisks(DomainParams),
    /// `daemon.status`.
    DaemonStatus,
    /// `guard.dismiss`: an operator ends a thaw guard.
    GuardDismiss(GuardParams),
    /// `metrics`: the Prometheus text exposition.
    Metrics,
    /// `rpc.discover`: the OpenRPC document.
    Discover,
}

/// Every method the daemon answers, for `method_not_found` messages.
pub const METHODS: &[&str] = &[
    "snapshot.create",
    "snapshot.delete",
    "jobs.list",
    "jobs.get",
    "jobs.cancel",
    "domain.disks",
    "daemon.status",
    "guard.dismiss",
    "metrics",
    "rpc.discover",
];

impl Call {
    /// Parse and validate `method` + `params`.
    pub fn parse(method: &str, params: Option<Value>) -> Result<Call, RpcError> {
        let call = match method {
            "snapshot.create" => Call::SnapshotCreate(check_create(parse(params)?)?),
            "snapshot.delete" => delete_target(parse(params)?)?,
            "jobs.list" => parse::<NoParams>(params).map(|_| Call::JobsList)?,
            "jobs.get" => Call::JobsGet(parse(params)?),
            "jobs.cancel" => Call::JobsCancel(parse(params)?),
            "domain.disks" => {
                let p: DomainParams = parse(params)?;
                check_name("domain", &p.domain)?;
                Call::DomainDisks(p)
            }
            "daemon.status" => parse::<NoParams>(params).map(|_| Call::DaemonStatus)?,
            "guard.dismiss" => {
                let p: GuardParams = parse(params)?;
                check_name("domain_uuid", &p.domain_uuid)?;
                Call::GuardDismiss(p)
            }
            "metrics" => parse::<NoParams>(params).map(|_| Call::Metrics)?,
            "rpc.discover" => parse::<NoParams>(params).map(|_| Call::Discover)?,
            other => {
                return Err(RpcError::new(
                    ErrorKind::MethodNotFound,
                    format!("unknown method {other:?}; methods: {}", METHODS.join(", ")),
                ))
            }
        };
        Ok(call)
    }
}

fn parse<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let params = match params {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ Value::Object(_)) => p,
        Some(_) => {
            return Err(RpcError::new(
                ErrorKind::InvalidParams,
                "params must be an object",
            ))
        }
    };
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, format!("invalid params: {e}")))
}

/// A name that is safe as a domain, pool, image or disk name: 1 to
/// [`MAX_NAME_LEN`] bytes, no `/`, `@`, control characters, not `.`/`..`.
pub fn check_name(what: &str, name: &str) -> Result<(), RpcError> {
    let problem = if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("is too long")
    } else if name.contains('/') || name.contains('@') {
        Some("contains '/' or '@'")
    } else if name.chars().any(char::is_control) {
        Some("contains control characters")
    } else if name == "." || name == ".." {
        Some("is '.' or '..'")
    } else {
        None
    };
    match problem {
        Some(p) => Err(RpcError::new(
            ErrorKind::InvalidParams,
            format!("{what} {name:?} {p} (names are 1-{MAX_NAME_LEN} bytes without '/', '@' or control characters)"),
        )),
        None => Ok(()),
    }
}

fn check_create(p: CreateParams) -> Result<CreateParams, RpcError> {
    check_name("domain", &p.domain)?;
    if let Some(rid) = &p.request_id {
        if rid.is_empty() || rid.len() > 128 || rid.chars().any(|c| c.is_control()) {
            return Err(RpcError::new(
                ErrorKind::InvalidParams,
                format!("request_id {rid:?} must be 1-128 characters without control characters"),
            ));
        }
    }
    check_name("image", &p.image)?;
    if let Some(pool) = &p.pool {
        check_name("pool", pool)?;
    }
    for disk in &p.disks {
        check_name("disk", disk)?;
    }
    Ok(p)
}

fn delete_target(p: DeleteParams) -> Result<Call, RpcError> {
    let (pool, image, fsid) = match (p.pool, p.image, p.location) {
        (Some(pool), Some(image), None) => (pool, image, None),
        (None, None, Some(location)) => {
            let (fsid, pool, image) = parse_location(&location)?;
            (pool, image, Some(fsid))
        }
        _ => {
            return Err(RpcError::new(
                ErrorKind::InvalidParams,
                "give either pool and image, or location (rbd://fsid/pool/image/snap)",
            ))
        }
    };
    check_name("pool", &pool)?;
    check_name("image", &image)?;
    Ok(Call::SnapshotDelete { pool, image, fsid })
}

/// `rbd://<fsid>/<pool>/<image>/<snap>` → (fsid, pool, image), each part
/// percent-decoded as Glance and Nova read it.
pub fn parse_location(location: &str) -> Result<(String, String, String), RpcError> {
    let parsed = crate::rbd::Location::parse(location)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    Ok((parsed.fsid, parsed.pool, parsed.image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kind(method: &str, params: Value) -> ErrorKind {
        Call::parse(method, Some(params))
            .map(|_| ErrorKind::Internal)
            .unwrap_or_else(|e| e.kind())
    }

    #[test]
    fn create_parses_and_defaults() {
        let call = Call::parse(
            "snapshot.create",
            Some(json!({"domain": "vm", "image": "img"})),
        )
        .expect("valid");
        let Call::SnapshotCreate(p) = call else {
            panic!("create")
        };
        assert_eq!(
            (p.pool, p.disks.len(), p.quiesce, p.flatten),
            (None, 0, None, None)
        );
    }

    #[test]
    fn bad_params_are_invalid_params() {
        for params in [
            json!({"domain": "vm"}),
            json!({"domain": "vm", "image": "a/b"}),
            json!({"domain": "vm", "image": "a@b"}),
            json!({"domain": "vm", "image": ".."}),
            json!({"domain": "vm", "image": "a\u{0}b"}),
            json!({"domain": "vm", "image": "x".repeat(251)}),
            json!({"domain": "vm", "image": "i", "extra": 1}),
            json!({"domain": 5, "image": "i"}),
            json!({"domain": "vm", "image": "i", "disks": "vda"}),
            json!({"domain": "vm", "image": "i", "quiesce": "always"}),
            json!({"domain": "vm", "image": "i", "flatten": "later"}),
            json!(["vm", "i"]),
        ] {
            assert_eq!(
                kind("snapshot.create", params.clone()),
                ErrorKind::InvalidParams,
                "{params}"
            );
        }
        assert_eq!(kind("jobs.list", json!({"x": 1})), ErrorKind::InvalidParams);
        assert_eq!(kind("nope", json!({})), ErrorKind::MethodNotFound);
    }

    #[test]
    fn delete_takes_pool_and_image_or_a_location() {
        let by_location = Call::parse(
            "snapshot.delete",
            Some(json!({"location": "rbd://f/images/i/snap"})),
        );
        assert_eq!(
            by_location.expect("ok"),
            Call::SnapshotDelete {
                pool: "images".into(),
                image: "i".into(),
                fsid: Some("f".into()),
            }
        );
        assert_eq!(
            kind("snapshot.delete", json!({"pool": "p"})),
            ErrorKind::InvalidParams
        );
        assert_eq!(
            kind("snapshot.delete", json!({"location": "rbd://f/p/i"})),
            ErrorKind::InvalidParams
        );
        assert_eq!(
            kind("snapshot.delete", json!({"location": "rbd://f/p/../snap"})),
            ErrorKind::InvalidParams
        );
    }
}
