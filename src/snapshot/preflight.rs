//! Everything checked before the guest is touched: a request that cannot
//! succeed fails here, with nothing frozen and nothing created. It also opens
//! the source images, so that the freeze window holds nothing but the
//! snapshot calls.

use std::sync::Arc;

use super::blocking;
use super::{
    Flatten, Quiesce, Settings, SnapshotError, SnapshotErrorKind as Kind, SnapshotRequest,
};
use crate::libvirt::{
    AgentChannel, Disk, DiskSource, DomainInfo, DomainState, FsInfo, Hypervisor, LibvirtErrorKind,
    AGENT_TIMEOUT_LIBVIRT_DEFAULT,
};
use crate::rbd::{monitors, CloneFormat, Image, ImageSpec, ImageStore};

/// One disk to snapshot, resolved.
#[derive(Debug)]
pub struct PlannedDisk {
    /// Target dev in the guest.
    pub target: String,
    /// The open source image.
    pub source: Arc<dyn Image>,
    /// Where the new image goes.
    pub dest: ImageSpec,
}

/// A request checked against the domain and the cluster.
#[derive(Debug)]
pub struct Plan {
    /// The domain, as read before anything else.
    pub domain: DomainInfo,
    /// Cluster fsid.
    pub fsid: String,
    /// Disks in request order.
    pub disks: Vec<PlannedDisk>,
    /// Clone format the cluster allows.
    pub clone_format: CloneFormat,
    /// Whether to freeze; when not, why the result is crash-consistent.
    pub freeze: Result<Vec<FsInfo>, String>,
    /// The agent response timeout to give the domain back once the job
    /// is done with its agent: the one it had (or libvirt's default when
    /// that cannot be read). `None`: the job did not change it.
    pub agent_timeout_restore: Option<i32>,
}

/// Check the request and resolve it into a plan.
pub async fn plan(
    hv: &Arc<dyn Hypervisor>,
    store: &Arc<dyn ImageStore>,
    settings: &Settings,
    req: &SnapshotRequest,
) -> Result<Plan, SnapshotError> {
    check_image_name(&req.image)?;
    let deadline = settings.call_deadline;
    let domain = {
        let (hv, name) = (Arc::clone(hv), req.domain.clone());
        blocking::hv("domain lookup", deadline, move || hv.domain(&name)).await?
    };
    if domain.state != DomainState::Running {
        return Err(SnapshotError::new(
            Kind::DomainNotRunning,
            format!("domain {} is {:?}, not running", domain.name, domain.state).to_lowercase(),
        ));
    }
    refuse_if_migrating(hv, &domain, deadline).await?;
    let selected = select_disks(&domain, &req.disks)?;
    let named: Vec<(String, Vec<String>)> = selected
        .iter()
        .map(|(disk, _)| (disk.target.clone(), monitors_of(disk)))
        .collect();
    let (fsid, clone_format, others) = {
        let (store, forced) = (Arc::clone(store), settings.clone_format);
        blocking::store("cluster info", deadline, move || {
            let format = match forced {
                Some(format) => format,
                None => store.clone_format()?,
            };
            // a snapshot needs the monitors: find a dead quorum before freezing
            store.ping()?;
            let others = other_cluster_disks(store.as_ref(), named)?;
            Ok((store.fsid()?, format, others))
        })
        .await?
    };
    if let Some(message) = others {
        return Err(SnapshotError::new(
            Kind::DiskOtherCluster,
            format!("domain {}: {message}", domain.name),
        ));
    }
    let mut disks = Vec::with_capacity(selected.len());
    for (disk, source) in &selected {
        let dest_name = if selected.len() == 1 {
            req.image.clone()
        } else {
            format!("{}-{}", req.image, disk.target)
        };
        disks.push(
            plan_disk(
                store,
                settings,
                req,
                &disk.target,
                source.clone(),
                dest_name,
            )
            .await?,
        );
    }
    let mut dest_pools: Vec<String> = disks.iter().map(|d| d.dest.pool.clone()).collect();
    dest_pools.dedup();
    check_flatten_mode(store, settings, req.flatten, clone_format, dest_pools).await?;
    let (freeze, agent_timeout_restore) = quiesce_plan(hv, settings, req.quiesce, &domain).await?;
    Ok(Plan {
        domain,
        fsid,
        disks,
        clone_format,
        freeze,
        agent_timeout_restore,
    })
}

/// A guest frozen while it migrates leaves with its freeze, and the thaw
/// sent here finds no domain: no freeze while libvirt migrates it.
async fn refuse_if_migrating(
    hv: &Arc<dyn Hypervisor>,
    domain: &DomainInfo,
    deadline: std::time::Duration,
) -> Result<(), SnapshotError> {
    let (hv, uuid) = (Arc::clone(hv), domain.uuid.clone());
    let migration = blocking::hv("migration check", deadline, move || hv.migration(&uuid)).await?;
    match migration {
        None => Ok(()),
        Some(migration) => Err(SnapshotError::new(
            Kind::Busy,
            format!(
                "domain {} is {migration}: no freeze while it migrates (the guest would leave \
                 frozen, out of this host's reach); ask again once the migration ended, on \
                 the host it then runs on",
                domain.name
            ),
        )),
    }
}

/// `background` and `cluster` answer before the flatten, so the temporary
/// snapshot must be removable at once (clone v2 moves it to the trash) and
/// `snap` must detach with the image (deep-flatten, set on every clone);
/// `cluster` also needs a manager that takes flatten tasks.
async fn check_flatten_mode(
    store: &Arc<dyn ImageStore>,
    settings: &Settings,
    mode: Flatten,
    format: CloneFormat,
    dest_pools: Vec<String>,
) -> Result<(), SnapshotError> {
    if !mode.after_answer() {
        return Ok(());
    }
    if format != CloneFormat::V2 {
        return Err(SnapshotError::new(
            Kind::Unsupported,
            format!("flatten {mode:?} needs clone v2, and this cluster (or the config's clone_format) allows only v1: set `ceph osd set-require-min-compat-client mimic`, or use flatten sync").to_lowercase(),
        ));
    }
    if mode == Flatten::Cluster {
        let store = Arc::clone(store);
        blocking::store("mgr check", settings.call_deadline, move || {
            dest_pools
                .iter()
                .try_for_each(|pool| store.check_flatten_tasks(pool))
        })
        .await
        .map_err(|e| {
            // a cluster that does not answer may take tasks once it does
            let kind = match e.kind {
                Kind::CephUnavailable | Kind::Timeout => e.kind,
                _ => Kind::Unsupported,
            };
            SnapshotError::new(
                kind,
                format!(
                    "flatten cluster needs the Ceph manager's rbd_support module: {}",
                    e.message
                ),
            )
        })?;
    }
    Ok(())
}

fn check_image_name(name: &str) -> Result<(), SnapshotError> {
    let bad = name.is_empty()
        || name.len() > 250
        || name.chars().any(|c| c == '/' || c == '@' || c.is_control());
    if bad {
        return Err(SnapshotError::new(
            Kind::InvalidParams,
            format!("image name {name:?} must be 1-250 characters without '/', '@' or control characters"),
        ));
    }
    Ok(())
}

/// The requested disks (default: the boot disk), each with its RBD source.
fn select_disks<'d>(
    domain: &'d DomainInfo,
    wanted: &[String],
) -> Result<Vec<(&'d Disk, ImageSpec)>, SnapshotError> {
    let chosen: Vec<&Disk> = if wanted.is_empty() {
        vec![boot_disk(domain).ok_or_else(|| {
            SnapshotError::new(
                Kind::DiskNotFound,
                format!("domain {} has no disk", domain.name),
            )
        })?]
    } else {
        let mut chosen = Vec::new();
        for (i, target) in wanted.iter().enumerate() {
            if wanted[..i].contains(target) {
                return Err(SnapshotError::new(
                    Kind::InvalidParams,
                    format!("disk {target} requested twice"),
                ));
            }
            let disk = domain
                .disks
                .iter()
                .find(|d| &d.target == target)
                .ok_or_else(|| {
                    let have: Vec<&str> = domain.disks.iter().map(|d| d.target.as_str()).collect();
                    SnapshotError::new(
                        Kind::DiskNotFound,
                        format!(
                            "domain {} has no disk {target} (it has: {})",
                            domain.name,
                            have.join(", ")
                        ),
                    )
                })?;
            chosen.push(disk);
        }
        chosen
    };
    chosen
        .into_iter()
        .map(|disk| Ok((disk, rbd_spec(domain, disk)?)))
        .collect()
}

/// The monitors a disk's `<host>` elements name (none for other disks).
fn monitors_of(disk: &Disk) -> Vec<String> {
    match &disk.source {
        DiskSource::Rbd(rbd) => rbd.hosts.clone(),
        DiskSource::Other { .. } => Vec::new(),
    }
}

/// Why some of the disks are not in this daemon's cluster (their monitors
/// are none of ours), or `None`. Blocks: resolves monitor names.
fn other_cluster_disks(
    store: &dyn ImageStore,
    named: Vec<(String, Vec<String>)>,
) -> Result<Option<String>, crate::rbd::RbdError> {
    if named.iter().all(|(_, hosts)| hosts.is_empty()) {
        return Ok(None);
    }
    let ours = store.monitors()?;
    if ours.is_empty() {
        return Ok(None);
    }
    let others: Vec<String> = named
        .into_iter()
        .filter(|(_, hosts)| monitors::compare(hosts, &ours) == monitors::Verdict::Other)
        .map(|(target, hosts)| format!("disk {target} names monitors {}", hosts.join(", ")))
        .collect();
    if others.is_empty() {
        return Ok(None);
    }
    let listed: Vec<String> = ours
        .iter()
        .map(|o| match o.port {
            Some(port) => format!("{}:{port}", o.host),
            None => o.host.clone(),
        })
        .collect();
    Ok(Some(format!(
        "{}, none of which is a monitor of this daemon's cluster ({}): its image is in \
         another Ceph cluster, and snapshotting the same name here would copy another \
         image; refused before any freeze",
        others.join("; "),
        listed.join(", ")
    )))
}

/// Lowest `<boot order>`, else the first hard disk, else the first disk.
pub fn boot_disk(domain: &DomainInfo) -> Option<&Disk> {
    domain
        .disks
        .iter()
        .filter(|d| d.boot_order.is_some())
        .min_by_key(|d| d.boot_order)
        .or_else(|| domain.disks.iter().find(|d| d.device == "disk"))
        .or_else(|| domain.disks.first())
}

fn rbd_spec(domain: &DomainInfo, disk: &Disk) -> Result<ImageSpec, SnapshotError> {
    match &disk.source {
        DiskSource::Rbd(rbd) if rbd.snapshot.is_none() => Ok(ImageSpec {
            pool: rbd.pool.clone(),
            namespace: rbd.namespace.clone(),
            name: rbd.image.clone(),
        }),
        DiskSource::Rbd(rbd) => Err(SnapshotError::new(
            Kind::DiskNotRbd,
            format!(
                "disk {} of {} reads from snapshot {}/{}@{}: only a writable RBD image can be snapshotted",
                disk.target,
                domain.name,
                rbd.pool,
                rbd.image,
                rbd.snapshot.as_deref().unwrap_or_default()
            ),
        )),
        DiskSource::Other { kind, path } => Err(SnapshotError::new(
            Kind::DiskNotRbd,
            format!(
                "disk {} of {} is {kind}{}, not an RBD image",
                disk.target,
                domain.name,
                path.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        )),
    }
}

async fn plan_disk(
    store: &Arc<dyn ImageStore>,
    settings: &Settings,
    req: &SnapshotRequest,
    target: &str,
    source: ImageSpec,
    dest_name: String,
) -> Result<PlannedDisk, SnapshotError> {
    let store = Arc::clone(store);
    let (requested, default) = (req.pool.clone(), settings.default_pool.clone());
    let target_owned = target.to_string();
    let probe_name = dest_name.clone();
    let allowed = settings.allowed_pools.clone();
    let refuse = allowed.clone();
    blocking::store("pre-flight", settings.call_deadline, move || {
        let image = store.open(&source)?;
        // Nova's rule: the pool of the image the disk was cloned from
        let pool = match requested {
            Some(pool) => Some(pool),
            None => image.parent()?.map(|p| p.image.pool).or(default),
        };
        let snapshots = image.snapshots()?.len() as u64;
        let limit = image.snapshot_limit()?;
        let exists = match &pool {
            // not even probed for a caller that may not write there
            Some(pool) if !permitted(&allowed, pool) => None,
            Some(pool) if store.pool_exists(pool)? => {
                Some(store.image_exists(&ImageSpec::new(pool.clone(), probe_name))?)
            }
            _ => None,
        };
        Ok((image, pool, snapshots, limit, exists))
    })
    .await
    .and_then(|(image, pool, snapshots, limit, exists)| {
        let pool = pool.ok_or_else(|| {
            SnapshotError::new(
                Kind::NoDestinationPool,
                format!("no destination pool for disk {target_owned}: the request names none, {} has no parent, and no default pool is configured", image.spec()),
            )
        })?;
        if !permitted(&refuse, &pool) {
            return Err(SnapshotError::new(
                Kind::PermissionDenied,
                format!(
                    "the caller may not write into pool {pool} (its [[policy]] rules allow: {})",
                    refuse.unwrap_or_default().join(", ")
                ),
            ));
        }
        match exists {
            None => Err(SnapshotError::new(Kind::PoolNotFound, format!("destination pool {pool} does not exist"))),
            Some(true) => Err(SnapshotError::new(Kind::ImageExists, format!("image {pool}/{dest_name} already exists"))),
            Some(false) if limit.is_some_and(|l| snapshots >= l) => Err(SnapshotError::new(
                Kind::SnapshotLimit,
                format!("{} has {snapshots} snapshots, its limit", image.spec()),
            )),
            Some(false) => Ok(PlannedDisk { target: target_owned, source: image, dest: ImageSpec::new(pool, dest_name) }),
        }
    })
}

/// Whether the caller's rules let it write into `pool` (`None`: any pool).
fn permitted(allowed: &Option<Vec<String>>, pool: &str) -> bool {
    allowed
        .as_ref()
        .is_none_or(|pools| pools.iter().any(|p| p == pool))
}

/// What to freeze (or why not) and the agent timeout to give back.
type QuiesceLook = (Result<Vec<FsInfo>, String>, Option<i32>);

/// Decide whether to freeze: `Ok(filesystems)` to freeze, `Err(reason)` for
/// a crash-consistent snapshot. With `required`, a reason is an error (and
/// the agent timeout is given back at once).
async fn quiesce_plan(
    hv: &Arc<dyn Hypervisor>,
    settings: &Settings,
    policy: Quiesce,
    domain: &DomainInfo,
) -> Result<QuiesceLook, SnapshotError> {
    if policy == Quiesce::Off {
        return Ok((Err("quiesce off".to_string()), None));
    }
    let (probed, restore) = match domain.agent {
        AgentChannel::Missing => (
            Err("the domain has no guest agent channel".to_string()),
            None,
        ),
        AgentChannel::Disconnected => (Err("the guest agent is not connected".to_string()), None),
        AgentChannel::Connected | AgentChannel::Unknown => {
            probe_agent(hv, settings, &domain.uuid).await
        }
    };
    match (probed, policy) {
        (Err(reason), Quiesce::Required) => {
            if let Some(seconds) = restore {
                restore_agent_timeout(hv, settings, &domain.uuid, seconds).await;
            }
            Err(SnapshotError::new(
                Kind::AgentUnavailable,
                format!("quiesce required but {reason} (domain {})", domain.name),
            ))
        }
        (probed, _) => Ok((probed, restore)),
    }
}

/// Give the domain back the agent response timeout it had (best effort:
/// a failure is logged, the snapshot stands).
pub async fn restore_agent_timeout(
    hv: &Arc<dyn Hypervisor>,
    settings: &Settings,
    uuid: &str,
    seconds: i32,
) {
    let (hv, id) = (Arc::clone(hv), uuid.to_string());
    let restored = blocking::hv("agent timeout", settings.call_deadline, move || {
        hv.set_agent_timeout(&id, seconds)
    })
    .await;
    if let Err(e) = restored {
        tracing::warn!(domain_uuid = uuid, seconds, error = %e,
            "could not give the domain its agent timeout back");
    }
}

/// Bound the agent's response time (noting the timeout the domain had, to
/// give it back), then ask for the filesystems: proves the agent answers,
/// and must happen before the freeze (a frozen agent refuses).
async fn probe_agent(
    hv: &Arc<dyn Hypervisor>,
    settings: &Settings,
    uuid: &str,
) -> (Result<Vec<FsInfo>, String>, Option<i32>) {
    let seconds = settings
        .agent_timeout
        .min(settings.freeze_deadline)
        .as_secs()
        .max(1) as i32;
    let (hv, uuid) = (Arc::clone(hv), uuid.to_string());
    let deadline = settings.agent_timeout + settings.call_deadline;
    let probed = blocking::hv("guest agent", deadline, move || {
        let before = hv.agent_timeout(&uuid);
        let restore = match hv.set_agent_timeout(&uuid, seconds) {
            Ok(()) => Some(before.unwrap_or(AGENT_TIMEOUT_LIBVIRT_DEFAULT)),
            // a driver without a real agent (the test driver) has no timeout to set
            Err(e) if e.kind == LibvirtErrorKind::Unsupported => None,
            Err(e) => return Err(e),
        };
        Ok((restore, hv.fs_info(&uuid)))
    })
    .await;
    let (restore, fs) = match probed {
        Ok((restore, fs)) => (restore, fs),
        Err(e) => return (Err(format!("the guest agent does not answer: {e}")), None),
    };
    let fs = match fs {
        Ok(fs) if fs.is_empty() => Err("the guest agent reports no mounted filesystem".to_string()),
        Ok(fs) => Ok(fs),
        Err(e) => Err(format!("the guest agent does not answer: {e}")),
    };
    (fs, restore)
}
