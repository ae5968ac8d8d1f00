//! The Unix socket server: accepts connections (up to the configured
//! number), checks each peer's credentials, frames requests as lines with a
//! size limit, and hands each parsed request to the daemon — several in
//! flight per connection, answered by id.

mod connection;
mod echo;
pub mod gate;
pub mod listener;
pub mod peer;
mod quota;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::daemon::Daemon;
use crate::protocol::{ErrorKind, Response, RpcError};

pub use gate::Gate;
pub use peer::Access;

/// What every connection shares.
#[derive(Debug)]
pub struct Shared {
    /// The daemon's state and methods.
    pub daemon: Arc<Daemon>,
    /// Who may call and what (re-resolved while names are missing).
    pub gate: Arc<Gate>,
    /// The OpenRPC document `rpc.discover` answers with.
    pub document: serde_json::Value,
    /// Longest request line.
    pub max_line: usize,
    /// Silence after which an idle connection is closed.
    pub idle: Duration,
}

/// Serve `listener` until `shutdown` turns true, then stop accepting and
/// wait for every connection to answer what it has in flight.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(shared.daemon.config.max_connections));
    let per_caller = quota::PerCaller::new(shared.daemon.config.max_connections_per_caller);
    let mut connections = JoinSet::new();
    let mut burst = crate::memory::BurstWatch::default();
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match admit(&slots, &per_caller, &stream) {
                    Ok(slots) => {
                        connections.spawn(connection::serve(stream, Arc::clone(&shared), shutdown.clone(), slots));
                        burst.connections(connections.len());
                    }
                    Err(why) => {
                        tokio::spawn(refuse(stream, why));
                    }
                },
                Err(e) => {
                    // out of descriptors and the like: back off, keep serving
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {
                burst.connections(connections.len());
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    // every answer goes out — to clients that read them: once the jobs are
    // over, a connection still stuck writing gets a few seconds, then closes
    let mut drained = false;
    {
        let all = async { while connections.join_next().await.is_some() {} };
        let jobs_over = async {
            shared.daemon.jobs.wait_idle().await;
            tokio::time::sleep(FLUSH_AT_STOP).await;
        };
        tokio::select! {
            _ = all => drained = true,
            _ = jobs_over => {}
        }
    }
    if !drained {
        tracing::warn!(
            connections = connections.len(),
            "closing connections whose clients do not read their answers"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

/// At a stop, how long connections may take to write their last answers
/// once no job runs.
const FLUSH_AT_STOP: Duration = Duration::from_secs(5);

/// What a connection holds while it is served: its place under the
/// daemon's limit and under its caller's.
#[derive(Debug)]
pub(crate) struct Slots {
    _daemon: OwnedSemaphorePermit,
    _caller: Option<quota::CallerSlot>,
}

/// A place under both limits, or why there is none.
fn admit(
    slots: &Arc<Semaphore>,
    per_caller: &Arc<quota::PerCaller>,
    stream: &tokio::net::UnixStream,
) -> Result<Slots, String> {
    // root and the daemon's own user may do anything to the daemon anyway
    // (an orchestration agent running as root holds many): the cap keeps
    // the other callers from taking each other's slots
    let uid = stream
        .peer_cred()
        .ok()
        .map(|c| c.uid())
        .filter(|&uid| uid != 0 && uid != nix::unistd::Uid::effective().as_raw());
    let caller = match uid {
        Some(uid) => match per_caller.take(uid) {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(
                    uid,
                    held = per_caller.held_by(uid),
                    "refused a connection: its caller holds max_connections_per_caller"
                );
                return Err(format!(
                    "uid {uid} holds {} connections already (max_connections_per_caller); \
                     close some, or retry later",
                    per_caller.held_by(uid)
                ));
            }
        },
        None => None,
    };
    let daemon = Arc::clone(slots)
        .try_acquire_owned()
        .map_err(|_| "too many connections; retry later".to_string())?;
    Ok(Slots {
        _daemon: daemon,
        _caller: caller,
    })
}

/// Past a connection limit: say so, then close.
async fn refuse(mut stream: tokio::net::UnixStream, why: String) {
    let error = RpcError::new(ErrorKind::TooManyConnections, why);
    let mut line =
        serde_json::to_string(&Response::err(serde_json::Value::Null, error)).unwrap_or_default();
    line.push('\n');
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(line.as_bytes())).await;
}
