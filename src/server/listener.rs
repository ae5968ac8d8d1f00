//! The listening socket: the one systemd passed, or our own at the
//! configured path with the configured mode and group.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::config::Config;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another process serves the path.
    #[error("{0} is in use by a running process (another rbdsnapd?)")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    /// An OS call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The socket group or mode is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// Where the daemon listens and whether it owns the path.
#[derive(Debug)]
pub struct Listening {
    /// The listener.
    pub listener: UnixListener,
    /// The path to remove on exit (None with socket activation).
    pub owned_path: Option<PathBuf>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ListenError + 'a {
    move |source| ListenError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Use the activated socket if any, else bind the configured path.
pub fn listen(
    config: &Config,
    activated: Option<std::os::unix::net::UnixListener>,
) -> Result<Listening, ListenError> {
    if let Some(std_listener) = activated {
        let listener = UnixListener::from_std(std_listener)
            .map_err(io("use activated socket", &config.socket))?;
        return Ok(Listening {
            listener,
            owned_path: None,
        });
    }
    let path = &config.socket;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create directory of", path))?;
    }
    remove_stale(path)?;
    let listener = UnixListener::bind(path).map_err(io("bind", path))?;
    let mode = config.socket_mode_bits()?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("chmod", path))?;
    // a group that does not resolve (yet) leaves the socket to root's
    // group: fewer callers, never more, and the guards still run
    let gid = config.socket_group.as_ref().and_then(|group| {
        super::peer::socket_gid(group)
            .map_err(|e| tracing::error!(error = %e, "socket stays in the daemon's group"))
            .ok()
    });
    if let Some(gid) = gid {
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| ListenError::Io {
            what: "chgrp",
            path: path.clone(),
            source: e.into(),
        })?;
    }
    Ok(Listening {
        listener,
        owned_path: Some(path.clone()),
    })
}

/// A socket file left by a daemon that died is removed; a live one is not.
fn remove_stale(path: &Path) -> Result<(), ListenError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ListenError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(io("remove stale socket", path))
}
