//! The client's command line, on its own so that the man page generator
//! (examples/man.rs) renders the very definitions `--help` shows.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rbdsnapd::protocol::{Flatten, Quiesce};

/// `--help`'s description of the exit status and error output.
pub const EXIT_STATUS: &str = "\
Exit status:
  0  success
  2  usage error
  3  refused: the daemon refused before acting and changed nothing (bad input,
     unknown domain, disk or pool, not an RBD disk, image exists, no guest
     agent with --quiesce required, busy, not allowed, shutting down, ...)
  4  failed: the work started and failed (freeze or thaw failed or timed out,
     Ceph or libvirt error or unreachable, cancelled, internal error, or a
     kind this client does not know); the daemon undid its steps and names
     any undo that failed
  5  the daemon could not be reached, closed the connection, sent something
     unreadable, or did not answer within --timeout (a snapshot may still be
     running: see `rbdsnapctl jobs`)

Errors are printed as `rbdsnapctl: <message> (<kind>)` on stderr; with --json
the error object ({code, message, data: {kind, ...}}) also goes to stdout.
The socket is --socket, else $RBDSNAPD_SOCKET, else /run/rbdsnapd/rbdsnapd.sock.";

/// Command line of the client.
#[derive(Debug, Parser)]
#[command(version, about = "Client for the rbdsnapd socket", after_help = EXIT_STATUS)]
pub struct Args {
    /// The daemon's socket [default: $RBDSNAPD_SOCKET, else /run/rbdsnapd/rbdsnapd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print the daemon's result (or error object) as JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Stop waiting for the answer after SECS seconds, 0 for never
    /// [default: 30; snapshot and delete: never]
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Take an image snapshot of a running domain's disk(s); prints the
    /// location of each new image, rbd://<fsid>/<pool>/<image>/snap
    Snapshot {
        /// Domain name or UUID
        domain: String,
        /// Name of the new image (with several disks: <IMAGE>-<target> each)
        image: String,
        /// Destination pool [default: the source's parent pool, else the
        /// daemon's default pool]
        #[arg(long)]
        pool: Option<String>,
        /// Target dev of a disk to include (repeat for several, one freeze
        /// for all) [default: the boot disk]
        #[arg(long = "disk", value_name = "TARGET")]
        disks: Vec<String>,
        /// Freeze the guest's filesystems: required, preferred (else
        /// crash-consistent) or off [default: the daemon's]
        #[arg(long, value_enum)]
        quiesce: Option<Quiesce>,
        /// Copy the parent's data before answering (sync), after it in the
        /// daemon (background) or in the Ceph manager (cluster), or leave a
        /// clone (none) [default: sync]
        #[arg(long, value_enum)]
        flatten: Option<Flatten>,
        /// Idempotency key (1-128 characters): a retry with the same key and
        /// arguments returns the first result, or joins the job while it
        /// runs, also across a daemon restart; after a failure it runs again
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// When the domain has a snapshot running, queue behind it instead
        /// of failing as busy (`--wait` is the old name)
        #[arg(long, alias = "wait")]
        wait_if_busy: bool,
        /// With a background or cluster flatten: after printing the
        /// location, follow the flatten with the progress line until it
        /// ends; exit 4 if it fails
        #[arg(long)]
        follow: bool,
    },
    /// Stop a running job: before its answer it is rolled back; after it
    /// (background/cluster flatten) the image stays usable, not flattened
    Cancel {
        /// The job id (from `snapshot` or `jobs`)
        job_id: String,
    },
    /// Delete an image this daemon made, by its location or pool and image
    Delete {
        /// rbd://<fsid>/<pool>/<image>/snap, as `snapshot` printed it
        #[arg(long, value_name = "URL", conflicts_with_all = ["pool", "image"])]
        location: Option<String>,
        /// Pool of the image
        #[arg(required_unless_present = "location")]
        pool: Option<String>,
        /// Image name
        #[arg(required_unless_present = "location")]
        image: Option<String>,
    },
    /// List the daemon's jobs, or show one
    Jobs {
        /// A job id (from `snapshot` or the list)
        job_id: Option<String>,
    },
    /// Show a domain's disks and guest agent as the daemon sees them
    Disks {
        /// Domain name or UUID
        domain: String,
    },
    /// Act on a thaw guard (a guest whose thaw is not confirmed)
    Guard {
        #[command(subcommand)]
        action: GuardAction,
    },
    /// Show the daemon's version, connections, jobs and counters
    Status,
    /// Print the daemon's metrics in the Prometheus text format
    Metrics,
}

/// What to do with a thaw guard.
#[derive(Debug, Subcommand)]
pub enum GuardAction {
    /// Stop guarding a guest you checked where it runs now (one that
    /// migrated away, say): the daemon no longer reports or thaws it
    Dismiss {
        /// The domain's UUID, as `status` lists it under guests at risk
        domain_uuid: String,
    },
}

pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s} is not a number of seconds"))
}
