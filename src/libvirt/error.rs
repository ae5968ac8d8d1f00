//! Errors of the hypervisor adapter, with libvirt's error codes mapped to
//! what a caller can act on.

use virt::error::ErrorNumber;

/// What went wrong, as far as a caller can act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibvirtErrorKind {
    /// No domain of that name or UUID.
    DomainNotFound,
    /// The domain is not in a state that allows the call (not running).
    NotRunning,
    /// No agent channel, agent not connected, or the agent errored.
    AgentUnavailable,
    /// The agent did not answer within the response timeout.
    AgentTimeout,
    /// The driver does not support the call.
    Unsupported,
    /// libvirtd cannot be reached (down, restarting, socket missing).
    Unavailable,
    /// The domain's XML says something the daemon cannot use.
    BadXml,
    /// Anything else.
    Other,
}

/// A failed hypervisor call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op} on {domain}: {message}")]
pub struct LibvirtError {
    /// The operation, e.g. "fsfreeze".
    pub op: &'static str,
    /// The domain (name or UUID) or the URI for connection errors.
    pub domain: String,
    /// Mapped kind.
    pub kind: LibvirtErrorKind,
    /// libvirt's message.
    pub message: String,
}

impl LibvirtError {
    /// Wrap a `virt` error, mapping its code.
    pub fn from_virt(op: &'static str, domain: &str, err: &virt::error::Error) -> LibvirtError {
        LibvirtError {
            op,
            domain: domain.to_string(),
            kind: kind_of(err),
            message: err.message().to_string(),
        }
    }

    /// An error the adapter itself detected.
    pub fn new(
        op: &'static str,
        domain: &str,
        kind: LibvirtErrorKind,
        message: impl Into<String>,
    ) -> LibvirtError {
        LibvirtError {
            op,
            domain: domain.to_string(),
            kind,
            message: message.into(),
        }
    }
}

fn kind_of(err: &virt::error::Error) -> LibvirtErrorKind {
    let virt::enumutil::Enum::Known(code) = err.code() else {
        return LibvirtErrorKind::Other;
    };
    match code {
        ErrorNumber::NoDomain => LibvirtErrorKind::DomainNotFound,
        ErrorNumber::OperationInvalid => LibvirtErrorKind::NotRunning,
        ErrorNumber::AgentUnresponsive | ErrorNumber::ArgumentUnsupported => {
            LibvirtErrorKind::AgentUnavailable
        }
        ErrorNumber::AgentCommandTimeout | ErrorNumber::OperationTimeout => {
            LibvirtErrorKind::AgentTimeout
        }
        ErrorNumber::NoSupport => LibvirtErrorKind::Unsupported,
        ErrorNumber::NoConnect
        | ErrorNumber::SystemError
        | ErrorNumber::Rpc
        | ErrorNumber::AuthFailed => LibvirtErrorKind::Unavailable,
        _ => LibvirtErrorKind::Other,
    }
}
