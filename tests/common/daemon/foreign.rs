//! One-shot clients run as another user (a child process), so the
//! daemon sees those credentials.

#[allow(unused_imports)]
use super::*;

/// What a client run as another user got.
#[derive(Debug)]
pub struct Foreign {
    /// The messages received.
    pub messages: Vec<Value>,
    /// Whether the daemon closed the connection (rather than the client
    /// stopping after the first line).
    pub closed: bool,
}

/// Run a one-shot client as `uid`/`gid` (a child process, so the daemon
/// sees those credentials): connect to `socket`, send `line`, read until
/// the answer (after any progress notes) or EOF (within 60 s).
pub fn call_as(uid: u32, gid: u32, socket: &Path, line: &str) -> Foreign {
    call_as_member(uid, gid, &[], socket, line)
}

/// Like [`call_as`], the client also in the supplementary `groups`.
pub fn call_as_member(uid: u32, gid: u32, groups: &[u32], socket: &Path, line: &str) -> Foreign {
    use std::os::unix::process::CommandExt;
    let groups: Vec<nix::unistd::Gid> = groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let script = r##"
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b"\n")
except (BrokenPipeError, ConnectionResetError):
    pass  # refused peers are answered and cut off without being read

def answered(data):
    # progress notes may come first: stop at the answer (or anything odd)
    for line in data.split(b"\n")[:-1]:
        try:
            message = json.loads(line)
        except ValueError:
            return True
        if "result" in message or "error" in message:
            return True
    return False

data = b""
closed = False
while not answered(data):
    try:
        chunk = s.recv(65536)
    except ConnectionResetError:
        chunk = b""
    if not chunk:
        closed = True
        break
    data += chunk
if not closed:
    # the daemon closes at once after a refusal: wait briefly for the EOF
    s.settimeout(2)
    try:
        closed = s.recv(65536) == b""
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
sys.stdout.write(data.decode())
sys.stdout.write("#closed\n" if closed else "#open\n")
"##;
    let mut command = Command::new("/usr/bin/python3");
    command
        .args(["-c", script])
        .arg(socket)
        .arg(line)
        .current_dir("/");
    // SAFETY: only async-signal-safe system calls between fork and exec
    unsafe {
        command.pre_exec(move || {
            use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
            setgroups(&groups)?;
            setgid(Gid::from_raw(gid))?;
            setuid(Uid::from_raw(uid))?;
            Ok(())
        });
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("run python3 as another user");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client as {uid}:{gid} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut messages = Vec::new();
    let mut closed = None;
    let method = serde_json::from_str::<Value>(line)
        .ok()
        .and_then(|r| r["method"].as_str().map(String::from));
    for l in stdout.lines() {
        match l {
            "#closed" => closed = Some(true),
            "#open" => closed = Some(false),
            _ => {
                let message: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                if let Some(wrong) =
                    super::super::openrpc::protocol().check(method.as_deref(), &message)
                {
                    panic!("the daemon's message does not follow docs/openrpc.json: {wrong}\n{message}");
                }
                messages.push(message);
            }
        }
    }
    Foreign {
        messages,
        closed: closed.expect("the client reports whether the connection closed"),
    }
}
