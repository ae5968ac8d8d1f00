//! What a failed command prints and how it exits. The exit status is part
//! of the interface scripts rely on: `cli::EXIT_STATUS` documents it in
//! `--help`, and [`exit_code`] is the only place that decides it.

use std::io::Write;

use rbdsnapd::client::{ClientError, ErrorClass};
use serde_json::json;

/// A failed command: the error and, for a snapshot, the job it started
/// (worth naming when the answer never came).
#[derive(Debug)]
pub struct Failure {
    /// What went wrong.
    pub error: ClientError,
    /// The job a `snapshot` started, from its progress notifications.
    pub job_id: Option<String>,
}

// Boxed: an RPC error with its details is large, and `run` returns it.
impl From<ClientError> for Box<Failure> {
    fn from(error: ClientError) -> Self {
        Box::new(Failure {
            error,
            job_id: None,
        })
    }
}

/// The documented exit status of each class of failure.
pub fn exit_code(class: ErrorClass) -> u8 {
    match class {
        ErrorClass::Refused => 3,
        ErrorClass::Failed => 4,
        ErrorClass::Unreachable => 5,
    }
}

/// Write to stdout. A reader that went away (`| head`) is not an error of
/// ours, and the daemon's work is done either way; so a failed write is
/// dropped instead of panicking as `print!` would.
pub fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Say what went wrong: one line on stderr, details and hints after it,
/// and the error object on stdout with `--json`.
pub fn report(failure: &Failure, json: bool) {
    let error = &failure.error;
    let kind = error.kind_name();
    let message = match error {
        ClientError::Rpc(rpc) => rpc.message.clone(),
        other => other.to_string(),
    };
    eprintln!("rbdsnapctl: {message} ({kind})");
    let mut job_id = failure.job_id.clone();
    if let ClientError::Rpc(rpc) = error {
        job_id = rpc.data.job_id.clone().or(job_id);
        for undo in &rpc.data.rollback_failures {
            eprintln!("  left behind (undo failed): {undo}");
        }
    }
    match (error, &job_id) {
        (ClientError::Connect { source, .. }, _) => {
            let hint = match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is rbdsnapd running? (systemctl status rbdsnapd; or give --socket)"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "not allowed to open the socket: run as root or as a member of its group"
                }
                _ => "",
            };
            if !hint.is_empty() {
                eprintln!("  {hint}");
            }
        }
        (ClientError::Timeout(_) | ClientError::Closed, Some(id)) => {
            eprintln!("  job {id} may still be running or have finished: rbdsnapctl jobs {id}");
        }
        (_, Some(id)) => eprintln!("  job {id}"),
        _ => {}
    }
    if json {
        let object = match error {
            ClientError::Rpc(rpc) => serde_json::to_value(rpc).unwrap_or_default(),
            other => json!({"message": other.to_string(), "data": {"kind": kind}}),
        };
        let text = serde_json::to_string_pretty(&object).unwrap_or_else(|_| object.to_string());
        print_out(&format!("{text}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_classes() {
        assert_eq!(exit_code(ErrorClass::Refused), 3);
        assert_eq!(exit_code(ErrorClass::Failed), 4);
        assert_eq!(exit_code(ErrorClass::Unreachable), 5);
    }
}
