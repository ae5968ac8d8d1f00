//! One client connection: credentials first, then requests read as lines
//! (bounded in size), each handled in its own task so that several can be in
//! flight; answers and progress notifications leave through one writer.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::echo::IdEcho;
use super::Shared;
use crate::daemon::Notify;
use crate::policy::{Peer, Scope};
use crate::protocol::{Call, ErrorKind, Notification, Request, Response, RpcError, JSONRPC};

/// Who is on the other end: what its rules allow, and its uid.
#[derive(Debug)]
struct Caller {
    scope: Scope,
    uid: Option<u32>,
}

/// What reading the next request produced.
enum Next {
    /// A whole line (without its `\n`).
    Line(Vec<u8>),
    /// The line exceeded the limit.
    TooLong,
    /// The peer closed its side.
    Eof,
}

/// Requests of one connection being worked on (answers not yet queued for
/// writing) before the daemon stops reading from it.
const MAX_IN_FLIGHT: usize = 32;

/// Lines queued for writing to one connection: with [`MAX_IN_FLIGHT`], what
/// bounds the memory a client that never reads can make the daemon hold.
const OUTPUT_QUEUE: usize = 32;

pub(super) async fn serve(
    stream: UnixStream,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    _slots: super::Slots,
) {
    let cred = stream.peer_cred().ok();
    let (groups, peer) = {
        use std::os::fd::AsFd;
        let groups = super::peer::peer_groups(stream.as_fd()).unwrap_or_default();
        (
            groups,
            stream.as_fd().try_clone_to_owned().ok().map(Arc::new),
        )
    };
    let (read, write) = stream.into_split();
    let (out, queue) = mpsc::channel::<String>(OUTPUT_QUEUE);
    let writer = tokio::spawn(write_lines(write, queue));
    let admission = shared.gate.current();
    let missing = admission.unresolved();
    let privileged =
        cred.is_some_and(|c| c.uid() == 0 || c.uid() == nix::unistd::Uid::effective().as_raw());
    let allowed = cred.is_some_and(|c| admission.access.allows(c.uid(), c.gid(), &groups));
    if !privileged && !missing.is_empty() {
        let msg = format!(
            "the daemon's configuration names users or groups that do not resolve yet ({}): \
             until they do, only root is served (retried every 10 s; is the name service up?)",
            missing.join(", ")
        );
        send(
            &out,
            &Response::err(Value::Null, RpcError::new(ErrorKind::PermissionDenied, msg)),
        )
        .await;
    } else if !allowed {
        let (uid, gid) = cred
            .map(|c| (c.uid(), c.gid()))
            .unwrap_or((u32::MAX, u32::MAX));
        tracing::warn!(
            uid,
            gid,
            "refused a peer not in allowed_users/allowed_groups"
        );
        let msg = format!(
            "uid {uid} gid {gid} may not use this socket (see allowed_users, allowed_groups and [[policy]])"
        );
        send(
            &out,
            &Response::err(Value::Null, RpcError::new(ErrorKind::PermissionDenied, msg)),
        )
        .await;
    } else {
        let scope = cred.map(|c| {
            admission.policy.scope(Peer {
                uid: c.uid(),
                gid: c.gid(),
                groups: &groups,
            })
        });
        let caller = Arc::new(Caller {
            scope: scope.unwrap_or(Scope::Unrestricted),
            uid: cred.map(|c| c.uid()),
        });
        read_requests(read, &shared, &out, &mut shutdown, peer, caller).await;
    }
    drop(out);
    let _ = writer.await;
}

async fn read_requests(
    read: OwnedReadHalf,
    shared: &Arc<Shared>,
    out: &mpsc::Sender<String>,
    shutdown: &mut watch::Receiver<bool>,
    peer: Option<Arc<OwnedFd>>,
    caller: Arc<Caller>,
) {
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut in_flight = JoinSet::new();
    // only a request counts as activity: blank lines do not keep a
    // connection (and its slot) alive
    let mut idle_until = tokio::time::Instant::now() + shared.idle;
    loop {
        while in_flight.try_join_next().is_some() {}
        // back-pressure: a client that sends without reading its answers
        // is not read from until some are written out
        while in_flight.len() >= MAX_IN_FLIGHT {
            in_flight.join_next().await;
        }
        let next = tokio::select! {
            next = tokio::time::timeout_at(idle_until, next_line(&mut reader, &mut buf, shared.max_line)) => next,
            _ = shutdown.changed() => break,
        };
        match next {
            Err(_idle) if in_flight.is_empty() => break,
            Err(_idle) => idle_until = tokio::time::Instant::now() + shared.idle,
            Ok(Err(_)) | Ok(Ok(Next::Eof)) => break,
            Ok(Ok(Next::TooLong)) => {
                let msg = format!(
                    "request line longer than {} bytes; closing the connection",
                    shared.max_line
                );
                send(
                    out,
                    &Response::err(Value::Null, RpcError::new(ErrorKind::RequestTooLarge, msg)),
                )
                .await;
                break;
            }
            Ok(Ok(Next::Line(line))) if line.iter().all(u8::is_ascii_whitespace) => {}
            Ok(Ok(Next::Line(line))) => {
                idle_until = tokio::time::Instant::now() + shared.idle;
                in_flight.spawn(handle_line(
                    line,
                    Arc::clone(shared),
                    out.clone(),
                    peer.clone(),
                    Arc::clone(&caller),
                ));
            }
        }
    }
    // answers to what was asked still go out before the connection closes
    while in_flight.join_next().await.is_some() {}
}

/// Read up to `\n`, never buffering more than `limit` bytes of one line.
/// Cancel-safe: a partial line stays in `buf` for the next call.
async fn next_line(
    reader: &mut BufReader<OwnedReadHalf>,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Next> {
    loop {
        let room = (limit + 1).saturating_sub(buf.len()) as u64;
        let read = (&mut *reader).take(room).read_until(b'\n', buf).await?;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            return Ok(Next::Line(std::mem::take(buf)));
        }
        if buf.len() > limit {
            return Ok(Next::TooLong);
        }
        if read == 0 {
            // a last request without its newline still counts
            return Ok(if buf.is_empty() {
                Next::Eof
            } else {
                Next::Line(std::mem::take(buf))
            });
        }
    }
}

async fn write_lines(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<String>) {
    while let Some(line) = queue.recv().await {
        if write.write_all(line.as_bytes()).await.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

async fn send<T: serde::Serialize>(out: &mpsc::Sender<String>, message: &T) {
    if let Ok(mut line) = serde_json::to_string(message) {
        line.push('\n');
        let _ = out.send(line).await;
    }
}

/// One request: parse fully, validate, act, answer.
async fn handle_line(
    line: Vec<u8>,
    shared: Arc<Shared>,
    out: mpsc::Sender<String>,
    peer: Option<Arc<OwnedFd>>,
    caller: Arc<Caller>,
) {
    let (echo, call) = match parse(&line) {
        Ok(parsed) => parsed,
        Err(refused) => {
            let (echo, error) = *refused;
            shared.daemon.stats.answered(true);
            send_echo(&out, &echo, &Response::err(echo.id.clone(), error)).await;
            return;
        }
    };
    let (progress_out, progress_echo) = (out.clone(), echo.clone());
    // progress is best effort: when the client does not read, notes that
    // find the queue full are dropped (the answer never is)
    let notify: Notify = Arc::new(move |params| {
        if peer.as_deref().is_some_and(hung_up) {
            return false;
        }
        let Some(line) = progress_echo.line(&Notification::progress(params)) else {
            return true;
        };
        // closed: the writer stopped, the client is gone
        !matches!(
            progress_out.try_send(line),
            Err(mpsc::error::TrySendError::Closed(_))
        )
    });
    let id = echo.id.clone();
    let outcome = match call {
        Call::Discover => {
            shared.daemon.stats.answered(false);
            Ok(shared.document.clone())
        }
        call => {
            let (scope, uid) = (&caller.scope, caller.uid);
            shared
                .daemon
                .handle(call, id.clone(), notify, scope, uid)
                .await
        }
    };
    let response = match outcome {
        Ok(result) => Response::ok(id, result),
        Err(error) => Response::err(id, error),
    };
    send_echo(&out, &echo, &response).await;
}

/// Whether the client closed its end entirely (POLLHUP). A client that only
/// shut down its writing side (`socat` after its input ends) still reads its
/// answers: that is POLLRDHUP alone, and does not count.
fn hung_up(socket: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::empty())];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

async fn send_echo<T: serde::Serialize>(out: &mpsc::Sender<String>, echo: &IdEcho, message: &T) {
    if let Some(line) = echo.line(message) {
        let _ = out.send(line).await;
    }
}

/// A request refused before it reached the daemon: the id to answer (null
/// when unreadable) and why.
type Refusal = Box<(IdEcho, RpcError)>;

fn refuse(id: &IdEcho, kind: ErrorKind, msg: impl Into<String>) -> Refusal {
    Box::new((id.clone(), RpcError::new(kind, msg)))
}

/// The request's id (for the answer) and its call, or the error to answer.
fn parse(line: &[u8]) -> Result<(IdEcho, Call), Refusal> {
    use ErrorKind::InvalidRequest;
    let null = IdEcho::new(b"", Value::Null);
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| refuse(&null, ErrorKind::ParseError, format!("not valid JSON: {e}")))?;
    let id = match &value {
        Value::Object(obj) => obj.get("id").cloned().unwrap_or(Value::Null),
        Value::Array(_) => {
            let msg = "batch requests are not supported: send one object per line";
            return Err(refuse(&null, InvalidRequest, msg));
        }
        _ => {
            return Err(refuse(
                &null,
                InvalidRequest,
                "a request must be a JSON object",
            ))
        }
    };
    if !(id.is_string() || id.is_number()) {
        let msg = "the request needs an \"id\" (a string or a number)";
        return Err(refuse(&null, InvalidRequest, msg));
    }
    let id = IdEcho::new(line, id);
    let request: Request = serde_json::from_value(value)
        .map_err(|e| refuse(&id, InvalidRequest, format!("not a JSON-RPC request: {e}")))?;
    if request.jsonrpc != JSONRPC {
        return Err(refuse(&id, InvalidRequest, "\"jsonrpc\" must be \"2.0\""));
    }
    let call =
        Call::parse(&request.method, request.params).map_err(|e| Box::new((id.clone(), e)))?;
    Ok((id, call))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(line: &[u8]) -> ErrorKind {
        parse(line)
            .map(|_| ErrorKind::Internal)
            .unwrap_or_else(|refused| refused.1.kind())
    }

    #[test]
    fn malformed_requests_get_the_documented_kinds() {
        assert_eq!(kind(b"{"), ErrorKind::ParseError);
        assert_eq!(kind(b"\xff\xfe"), ErrorKind::ParseError);
        assert_eq!(kind(&[b'['; 1000]), ErrorKind::ParseError);
        assert_eq!(kind(b"[]"), ErrorKind::InvalidRequest);
        assert_eq!(kind(b"42"), ErrorKind::InvalidRequest);
        assert_eq!(
            kind(br#"{"jsonrpc":"2.0","method":"daemon.status"}"#),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(br#"{"jsonrpc":"1.0","id":1,"method":"daemon.status"}"#),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","x":1}"#),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(br#"{"jsonrpc":"2.0","id":1,"method":7}"#),
            ErrorKind::InvalidRequest
        );
        assert_eq!(
            kind(br#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#),
            ErrorKind::MethodNotFound
        );
        assert_eq!(
            kind(br#"{"jsonrpc":"2.0","id":1,"method":"daemon.status","params":[1]}"#),
            ErrorKind::InvalidParams
        );
        let (id, _) =
            parse(br#"{"jsonrpc":"2.0","id":"a","method":"daemon.status"}"#).expect("valid");
        assert_eq!(id.id, Value::from("a"));
    }
}
