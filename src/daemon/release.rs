//! `flatten: none` without leaks: an image made with `none` stays a clone of
//! its source disk's snapshot, so the source cannot be removed while it
//! lives (with clone v2 that snapshot sits in the source's trash, and Nova's
//! cleanup of the instance then fails quietly). The daemon must never be why
//! an instance cannot be deleted: it remembers every such dependency
//! (`state_dir/dependents.json`, across restarts; listed in `daemon.status`)
//! and, once the source has had no client (no running instance, on any
//! host) for `snapshot.release_none_after_secs`, flattens its image — found
//! by its RBD id, also after Glance moved it to the trash — so that the
//! source's snapshot goes and the source can be removed. An image a
//! consumer removed, flattened or replaced is forgotten. A release flatten
//! stops cleanly at a stop; one that may have been killed half-way (the
//! record says it started) has its object map rebuilt before the next try,
//! as a resumed background flatten does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Daemon;
use crate::rbd::{ImageSpec, ImageStore, RbdError, RbdErrorKind};
use crate::snapshot::{self, ownership, JobHooks};

/// One of our images that still reads through to its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Dependent {
    /// Our image (by the name it was made with; it may be in the trash).
    pub image: ImageSpec,
    /// Its RBD id: how it is found in the trash.
    pub image_id: String,
    /// The source disk it depends on.
    pub source: ImageSpec,
    /// The source's snapshot it was cloned from.
    pub source_snapshot: String,
    /// The job that made it.
    pub job_id: String,
    /// Unix seconds it was recorded.
    pub since_unix: u64,
    /// What the daemon last saw: the source in use, flattening, …
    #[serde(default)]
    pub state: String,
    /// A flatten of it was started (and may have been killed half-way):
    /// the next one rebuilds the object map first, as a resumed background
    /// flatten does, or it could skip objects never copied.
    #[serde(default)]
    pub flatten_started: bool,
}

/// The dependencies the daemon keeps track of.
#[derive(Debug)]
pub struct Dependents {
    path: PathBuf,
    list: Mutex<Vec<Dependent>>,
}

impl Dependents {
    /// The record under `state_dir` (empty when there is none yet, or it
    /// cannot be read: then it says so in the log).
    pub fn load(state_dir: &std::path::Path) -> Dependents {
        let path = state_dir.join("dependents.json");
        let list = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e,
                    "unreadable record of flatten: none images: their sources are not watched");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Dependents {
            path,
            list: Mutex::new(list),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Dependent>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every dependency, oldest first.
    pub fn list(&self) -> Vec<Dependent> {
        self.lock().clone()
    }

    fn save(&self, list: &[Dependent]) {
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(list)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e,
                "could not record the flatten: none images: a restart forgets them");
        }
    }

    fn add(&self, dependent: Dependent) {
        let mut list = self.lock();
        list.retain(|d| d.image_id != dependent.image_id);
        list.push(dependent);
        self.save(&list);
    }

    fn forget(&self, image_id: &str) {
        let mut list = self.lock();
        list.retain(|d| d.image_id != image_id);
        self.save(&list);
    }

    /// Record, durably, that a flatten of `image_id` starts.
    fn flatten_starts(&self, image_id: &str) {
        let mut list = self.lock();
        if let Some(d) = list.iter_mut().find(|d| d.image_id == image_id) {
            d.flatten_started = true;
            d.state = "flattening".into();
        }
        self.save(&list);
    }

    fn note(&self, image_id: &str, state: &str) {
        if let Some(d) = self.lock().iter_mut().find(|d| d.image_id == image_id) {
            d.state = state.to_string();
        }
    }
}

/// Record the images a `none` job made (their ids and sources, read from
/// Ceph right after the answer).
pub async fn register(
    daemon: &Daemon,
    store: &Arc<dyn ImageStore>,
    job_id: &str,
    images: Vec<ImageSpec>,
) {
    let store = Arc::clone(store);
    let look = move || {
        images
            .iter()
            .map(|spec| {
                let image = store.open_read_only(spec)?;
                Ok((spec.clone(), image.id()?, image.parent()?))
            })
            .collect::<Result<Vec<_>, RbdError>>()
    };
    let found = crate::owners::CEPH
        .call(daemon.settings.call_deadline, look)
        .await;
    let Ok(Ok(found)) = found else {
        tracing::error!(
            job_id,
            "could not read the ids of the flatten: none images: their sources are not watched"
        );
        return;
    };
    for (image, image_id, parent) in found {
        let Some(parent) = parent else { continue };
        daemon.dependents.add(Dependent {
            image,
            image_id,
            source: parent.image,
            source_snapshot: parent.snap,
            job_id: job_id.to_string(),
            since_unix: snapshot::guard::unix_now(),
            state: "source in use".into(),
            flatten_started: false,
        });
    }
}

/// What one look at a dependency found.
#[derive(Debug)]
enum Verdict {
    /// Nothing depends any more (removed, flattened, not ours): forget it.
    Resolved(&'static str),
    /// The source has clients: wait.
    SourceInUse,
    /// The source has none: flatten once it stayed so long enough.
    SourceIdle,
}

/// Watch every dependency until the daemon stops.
pub async fn keep_releasing(daemon: Arc<Daemon>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let after = daemon.config.snapshot.release_none_after_secs;
    if after <= 0.0 {
        return;
    }
    let after = Duration::from_secs_f64(after);
    let period = (after / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    // a release flatten stops cleanly at a stop (the next start goes on)
    let cancel = snapshot::CancelFlag::default();
    {
        let (cancel, mut stopped) = (Arc::clone(&cancel), stopped.clone());
        tokio::spawn(async move {
            let _ = stopped.changed().await;
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let mut idle_since: std::collections::HashMap<String, Instant> = Default::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stopped.changed() => return,
        }
        let Ok(store) = daemon.backends.store() else {
            continue;
        };
        for dependent in daemon.dependents.list() {
            let id = dependent.image_id.clone();
            match look(&daemon, &store, &dependent).await {
                Ok(Verdict::Resolved(why)) => {
                    tracing::info!(image = %dependent.image, source = %dependent.source, why,
                        "flatten: none image no longer depends on its source");
                    daemon.dependents.forget(&id);
                    idle_since.remove(&id);
                }
                Ok(Verdict::SourceInUse) => {
                    daemon.dependents.note(&id, "source in use");
                    idle_since.remove(&id);
                }
                Ok(Verdict::SourceIdle) => {
                    let since = *idle_since.entry(id.clone()).or_insert_with(Instant::now);
                    daemon.dependents.note(&id, "source idle");
                    if since.elapsed() >= after
                        && release(&daemon, &store, &dependent, &cancel).await
                    {
                        daemon.dependents.forget(&id);
                        idle_since.remove(&id);
                    }
                }
                Err(e) => {
                    daemon.dependents.note(&id, &format!("could not look: {e}"));
                }
            }
        }
    }
}

/// Whether `dependent` still depends on its source, and whether the
/// source has clients.
async fn look(
    daemon: &Daemon,
    store: &Arc<dyn ImageStore>,
    dependent: &Dependent,
) -> Result<Verdict, RbdError> {
    let (store, d) = (Arc::clone(store), dependent.clone());
    let call = move || {
        // read-only: a look takes no watch a delete would take for a user
        let image = match store.open_by_id_read_only(&d.image, &d.image_id) {
            Ok(image) => image,
            Err(e) if e.kind == RbdErrorKind::NotFound => {
                return Ok(Verdict::Resolved("image removed"))
            }
            Err(e) => return Err(e),
        };
        if !matches!(
            ownership::claim(image.as_ref())?,
            ownership::Claim::Ours { .. }
        ) {
            return Ok(Verdict::Resolved("not ours (its id record does not match)"));
        }
        match image.parent()? {
            Some(parent) if parent.image == d.source => {}
            _ => return Ok(Verdict::Resolved("flattened")),
        }
        drop(image);
        let source = match store.open_read_only(&d.source) {
            Ok(source) => source,
            Err(e) if e.kind == RbdErrorKind::NotFound => return Ok(Verdict::SourceIdle),
            Err(e) => return Err(e),
        };
        Ok(if source.watchers()?.is_empty() {
            Verdict::SourceIdle
        } else {
            Verdict::SourceInUse
        })
    };
    match crate::owners::CEPH
        .call(daemon.settings.call_deadline, call)
        .await
    {
        Ok(verdict) => verdict,
        Err(late) => Err(RbdError::new(
            "look",
            dependent.image.to_string(),
            RbdErrorKind::Other,
            format!("{late:?}"),
        )),
    }
}

/// Flatten `dependent` (under the host's flatten limit) and remove the
/// source's snapshot where clone v1 keeps it; whether it is done.
async fn release(
    daemon: &Arc<Daemon>,
    store: &Arc<dyn ImageStore>,
    dependent: &Dependent,
    cancel: &snapshot::CancelFlag,
) -> bool {
    tracing::info!(image = %dependent.image, source = %dependent.source,
        "the source of a flatten: none image has no client: flattening the image so the source can be removed");
    let rebuild = dependent.flatten_started;
    if rebuild {
        tracing::warn!(image = %dependent.image,
            "an earlier release flatten of this image may have been killed: rebuilding its object map first");
    }
    daemon.dependents.flatten_starts(&dependent.image_id);
    let opened = {
        let (store, d) = (Arc::clone(store), dependent.clone());
        crate::owners::FLATTEN
            .call(daemon.settings.flatten_deadline, move || {
                let image = store.open_by_id(&d.image, &d.image_id)?;
                if rebuild {
                    image.rebuild_object_map()?;
                }
                Ok::<_, RbdError>(image)
            })
            .await
    };
    let image = match opened {
        Ok(Ok(image)) => image,
        Ok(Err(e)) => {
            let why = format!("could not open it: {e}");
            daemon.dependents.note(&dependent.image_id, &why);
            return false;
        }
        Err(late) => {
            let why = format!("could not open it: {late:?}");
            daemon.dependents.note(&dependent.image_id, &why);
            return false;
        }
    };
    let hooks = JobHooks {
        slots: Arc::clone(&daemon.slots),
        cancel: Arc::clone(cancel),
        ..JobHooks::default()
    };
    let flattened = snapshot::flatten::local(
        store,
        &dependent.image,
        Some(image),
        &daemon.settings,
        &hooks,
    )
    .await;
    if let Err(stopped) = flattened {
        tracing::warn!(image = %dependent.image, error = %stopped.error,
            "flatten of a flatten: none image failed; retried later");
        daemon.dependents.note(
            &dependent.image_id,
            &format!("flatten failed: {}", stopped.error),
        );
        return false;
    }
    remove_kept_snapshot(daemon, store, dependent).await;
    tracing::info!(image = %dependent.image, source = %dependent.source,
        "flatten: none image flattened: its source no longer depends on the daemon");
    true
}

/// With clone v1 the source keeps our protected snapshot: remove it once
/// no clone is left on it (clone v2's trashed snapshot goes by itself).
async fn remove_kept_snapshot(daemon: &Daemon, store: &Arc<dyn ImageStore>, dependent: &Dependent) {
    let (store, d) = (Arc::clone(store), dependent.clone());
    let call = move || {
        if !d
            .source_snapshot
            .starts_with(snapshot::TEMP_SNAPSHOT_PREFIX)
        {
            return Ok(());
        }
        let source = store.open(&d.source)?;
        if !source.snapshots()?.contains(&d.source_snapshot)
            || !source.children(&d.source_snapshot)?.is_empty()
        {
            return Ok(());
        }
        source.remove_snapshot(&d.source_snapshot, true)
    };
    let removed = crate::owners::CEPH
        .call(daemon.settings.call_deadline, call)
        .await;
    if !matches!(removed, Ok(Ok(()))) {
        tracing::warn!(source = %dependent.source, snapshot = %dependent.source_snapshot,
            "could not remove the kept snapshot of a released flatten: none image");
    }
}
