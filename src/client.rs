//! A small blocking client of the daemon's socket, for `rbdsnapctl` and for
//! Rust programs and tests that drive the daemon.
//!
//! One [`Client`] is one connection. [`Client::call`] sends one request and
//! reads lines until the answer with that request's id arrives, handing the
//! `progress` notifications of that request to a callback on the way. Lines
//! meant for other requests (the protocol allows several in flight per
//! connection) are skipped, so the caller never sees another request's
//! traffic. Results are returned as [`serde_json::Value`] on purpose: the
//! daemon may add fields, and a client that only reads what it needs keeps
//! working.
//!
//! [`ErrorClass`] sorts every failure into what a caller can do about it
//! (fix the request, retry the work, or find the daemon); the CLI's exit
//! codes are built on it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::protocol::{ErrorKind, ProgressParams, RpcError, JSONRPC, PROGRESS};

/// Longest line accepted from the daemon. Results are small (a few KiB for
/// a long job list); the cap only stops a broken peer from filling memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Why a call did not return a result.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be opened.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why (ENOENT: no daemon; EACCES: not allowed to open it).
        source: io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("socket error: {0}")]
    Io(io::Error),
    /// The daemon sent something that is not a JSON-RPC message.
    #[error("the daemon sent an unreadable message: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Rpc(RpcError),
    /// The daemon closed the connection before answering.
    #[error("the daemon closed the connection before answering")]
    Closed,
    /// No answer within the client's timeout (the work may still run).
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// A short machine-readable name: the daemon's `data.kind` for
    /// [`ClientError::Rpc`], else `connect`, `io`, `protocol`, `closed` or
    /// `timeout`.
    pub fn kind_name(&self) -> &str {
        match self {
            ClientError::Connect { .. } => "connect",
            ClientError::Io(_) => "io",
            ClientError::Protocol(_) => "protocol",
            ClientError::Rpc(e) => &e.data.kind,
            ClientError::Closed => "closed",
            ClientError::Timeout(_) => "timeout",
        }
    }

    /// What the failure means for the caller.
    pub fn class(&self) -> ErrorClass {
        match self {
            ClientError::Rpc(e) => ErrorClass::of_kind(ErrorKind::from_name(&e.data.kind)),
            _ => ErrorClass::Unreachable,
        }
    }
}

/// What a failed call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The daemon refused before acting: nothing was changed; fix the
    /// request (or wait, for `busy`) and ask again.
    Refused,
    /// The work started and failed; the daemon undid its steps (the error
    /// lists any undo that failed).
    Failed,
    /// The daemon could not be reached, closed the connection, sent garbage
    /// or did not answer in time. Whether work happened is unknown.
    Unreachable,
}

impl ErrorClass {
    /// The class of a daemon error kind; `None` (a kind this client does
    /// not know, from a newer daemon) counts as failed, the cautious reading.
    ///
    /// The match has no wildcard on purpose: a new [`ErrorKind`] does not
    /// compile until someone decides its class.
    pub fn of_kind(kind: Option<ErrorKind>) -> ErrorClass {
        use ErrorKind as K;
        let Some(kind) = kind else {
            return ErrorClass::Failed;
        };
        match kind {
            K::ParseError
            | K::InvalidRequest
            | K::MethodNotFound
            | K::InvalidParams
            | K::RequestTooLarge
            | K::PermissionDenied
            | K::ShuttingDown
            | K::TooManyConnections
            | K::DomainNotFound
            | K::DomainNotRunning
            | K::DiskNotFound
            | K::DiskNotRbd
            | K::DiskOtherCluster
            | K::PoolNotFound
            | K::NoDestinationPool
            | K::ImageExists
            | K::ImageNotFound
            | K::ImageInUse
            | K::NotOurs
            | K::SnapshotLimit
            | K::Unsupported
            | K::AgentUnavailable
            | K::Busy
            | K::JobNotFound
            | K::GuardNotFound => ErrorClass::Refused,
            K::FreezeFailed
            | K::FreezeTimeout
            | K::ThawFailed
            | K::Cancelled
            | K::LibvirtUnavailable
            | K::CephUnavailable
            | K::Timeout
            | K::LibvirtError
            | K::CephError
            | K::Internal => ErrorClass::Failed,
        }
    }
}

/// One connection to the daemon.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    /// Bytes of a line not complete yet; kept across reads so a read that
    /// times out halfway loses nothing.
    pending: Vec<u8>,
    next_id: u64,
    timeout: Option<Duration>,
}

impl Client {
    /// Connect to the socket at `path`. `timeout` bounds each call (from
    /// sending the request to the answer); `None` waits as long as the
    /// daemon works, which is bounded by the daemon's own deadlines.
    pub fn connect(
        path: impl AsRef<Path>,
        timeout: Option<Duration>,
    ) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Client {
            reader: BufReader::new(stream),
            pending: Vec::new(),
            next_id: 1,
            timeout: timeout.filter(|t| !t.is_zero()),
        })
    }

    /// Call `method` with `params` (an object), passing this request's
    /// progress notifications to `on_progress`, and return its result.
    pub fn call(
        &mut self,
        method: &str,
        params: Value,
        mut on_progress: impl FnMut(ProgressParams),
    ) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let request = json!({"jsonrpc": JSONRPC, "id": id, "method": method, "params": params});
        let mut line = request.to_string().into_bytes();
        line.push(b'\n');
        if let Err(e) = self.send(&line, deadline) {
            return Err(self.refusal_after_write_error(e, deadline));
        }
        let id = Value::from(id);
        loop {
            let message = self.read_message(deadline)?;
            if let Some(answer) = answer_for(&id, message, &mut on_progress)? {
                return answer;
            }
        }
    }

    fn send(&mut self, line: &[u8], deadline: Option<Instant>) -> Result<(), ClientError> {
        let stream = self.reader.get_ref();
        stream
            .set_write_timeout(remaining(deadline, self.timeout)?)
            .map_err(ClientError::Io)?;
        let mut writer: &UnixStream = stream;
        writer
            .write_all(line)
            .and_then(|()| writer.flush())
            .map_err(|e| self.io_error(e))
    }

    /// A daemon that refuses a connection (peer not allowed, too many
    /// connections) writes one error line and closes; our write then fails
    /// with EPIPE. The daemon's reason is worth more than the EPIPE, so read
    /// what it left before giving up.
    fn refusal_after_write_error(
        &mut self,
        error: ClientError,
        deadline: Option<Instant>,
    ) -> ClientError {
        if !matches!(error, ClientError::Closed) {
            return error;
        }
        match self.read_message(deadline) {
            Ok(message) => match answer_for(&Value::Null, message, &mut |_| {}) {
                Ok(Some(Err(refusal @ ClientError::Rpc(_)))) => refusal,
                _ => ClientError::Closed,
            },
            Err(_) => ClientError::Closed,
        }
    }

    /// Read one complete line and parse it as a JSON object.
    fn read_message(&mut self, deadline: Option<Instant>) -> Result<Value, ClientError> {
        loop {
            let wait = remaining(deadline, self.timeout)?;
            self.reader
                .get_ref()
                .set_read_timeout(wait)
                .map_err(ClientError::Io)?;
            let room = (MAX_LINE_BYTES + 1).saturating_sub(self.pending.len());
            let read = (&mut self.reader)
                .take(room as u64)
                .read_until(b'\n', &mut self.pending);
            match read {
                // End of stream: whatever partial line is left can never
                // be completed.
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) if self.pending.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.pending);
                    return parse_line(&line);
                }
                Ok(_) if self.pending.len() > MAX_LINE_BYTES => {
                    return Err(ClientError::Protocol(format!(
                        "a line longer than {MAX_LINE_BYTES} bytes"
                    )))
                }
                // A partial line: the rest is still on its way.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    fn io_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                ClientError::Timeout(self.timeout.unwrap_or_default())
            }
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => ClientError::Closed,
            _ => ClientError::Io(e),
        }
    }
}

/// Time left before `deadline`, as a socket timeout (`None`: no limit).
fn remaining(
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> Result<Option<Duration>, ClientError> {
    let Some(deadline) = deadline else {
        return Ok(None);
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // A zero socket timeout is an error in std, and means "expired" here.
    if left.is_zero() {
        return Err(ClientError::Timeout(timeout.unwrap_or_default()));
    }
    Ok(Some(left))
}

fn parse_line(line: &[u8]) -> Result<Value, ClientError> {
    let text = String::from_utf8_lossy(line);
    let value: Value = serde_json::from_str(text.trim_end())
        .map_err(|e| ClientError::Protocol(format!("{e} in {:?}", shorten(&text))))?;
    if !value.is_object() {
        return Err(ClientError::Protocol(format!(
            "not a JSON object: {:?}",
            shorten(&text)
        )));
    }
    Ok(value)
}

fn shorten(text: &str) -> String {
    let text = text.trim_end();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// What one message means for the request `id`: `None` when it is not its
/// answer (progress is handed to `on_progress` on the way), else the answer.
/// A response with a `null` id is taken as ours: the daemon sends those
/// when it rejects a connection or a line before reading any id.
fn answer_for(
    id: &Value,
    mut message: Value,
    on_progress: &mut impl FnMut(ProgressParams),
) -> Result<Option<Result<Value, ClientError>>, ClientError> {
    if let Some(method) = message.get("method").and_then(Value::as_str) {
        if method == PROGRESS {
            let params = message
                .get_mut("params")
                .map(Value::take)
                .unwrap_or_default();
            // A progress report this client cannot read is dropped rather
            // than failing the call: the answer that follows matters more
            // than the display of the way there.
            if let Ok(progress) = serde_json::from_value::<ProgressParams>(params) {
                if &progress.id == id {
                    on_progress(progress);
                }
            }
        }
        // Other notifications are for a newer client; ignore them.
        return Ok(None);
    }
    let Some(their_id) = message.get("id") else {
        return Err(ClientError::Protocol(format!(
            "neither a response nor a notification: {}",
            shorten(&message.to_string())
        )));
    };
    if their_id != id && !their_id.is_null() {
        return Ok(None);
    }
    if let Some(error) = message.get_mut("error").map(Value::take) {
        return Ok(Some(Err(ClientError::Rpc(rpc_error(error)))));
    }
    match message.get_mut("result").map(Value::take) {
        Some(result) => Ok(Some(Ok(result))),
        None => Err(ClientError::Protocol(
            "a response with neither result nor error".into(),
        )),
    }
}

/// The error object, read leniently: an error with a missing or odd field
/// is still the daemon's answer, and still an error.
fn rpc_error(error: Value) -> RpcError {
    if let Ok(parsed) = serde_json::from_value::<RpcError>(error.clone()) {
        return parsed;
    }
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let mut parsed = RpcError::new(
        ErrorKind::Internal,
        text(error.get("message")).unwrap_or_else(|| error.to_string()),
    );
    parsed.code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    if let Some(kind) = text(error.pointer("/data/kind")) {
        parsed.data.kind = kind;
    }
    parsed
}

#[cfg(test)]
mod tests;
