//! `rbdsnapctl`, the command-line client of the rbdsnapd socket: take and
//! delete snapshots, look at jobs, a domain's disks and the daemon's health.
//!
//! Output is for people by default (results on stdout, progress and
//! summaries on stderr, so `$(rbdsnapctl snapshot …)` is just the
//! locations) and for programs with `--json` (the daemon's result or error
//! object, verbatim, on stdout). The exit status says what kind of failure
//! happened; see [`report::EXIT_STATUS`].

mod progress;
mod render;
mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use rbdsnapd::client::Client;
use serde_json::{json, Map, Value};

use progress::ProgressLine;
use report::{exit_code, print_out, report, Failure, EXIT_STATUS};

const DEFAULT_SOCKET: &str = "/run/rbdsnapd/rbdsnapd.sock";
const SOCKET_ENV: &str = "RBDSNAPD_SOCKET";

/// Commands that only read get this long unless `--timeout` says
/// otherwise; a snapshot or delete may legitimately take hours (a flatten
/// of a big image), and the daemon bounds every step itself.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Command line of the client.
#[derive(Debug, Parser)]
#[command(version, about = "Client for the rbdsnapd socket", after_help = EXIT_STATUS)]
struct Args {
    /// The daemon's socket [default: $RBDSNAPD_SOCKET, else /run/rbdsnapd/rbdsnapd.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the daemon's result (or error object) as JSON on stdout
    #[arg(long, global = true)]
    json: bool,
    /// Stop waiting for the answer after SECS seconds, 0 for never
    /// [default: 30; snapshot and delete: never]
    #[arg(long, global = true, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
        /// When the domain has a snapshot running, wait for it instead of
        /// failing as busy
        #[arg(long)]
        wait: bool,
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
    /// Show the daemon's version, connections, jobs and counters
    Status,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Quiesce {
    Required,
    Preferred,
    Off,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Flatten {
    Sync,
    Background,
    Cluster,
    #[value(name = "none")]
    Never,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s} is not a number of seconds"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(&failure, args.json);
            ExitCode::from(exit_code(failure.error.class()))
        }
    }
}

fn run(args: &Args) -> Result<(), Box<Failure>> {
    let socket = args
        .socket
        .clone()
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let long_running = matches!(
        args.command,
        Command::Snapshot { .. } | Command::Delete { .. }
    );
    let timeout = match args.timeout {
        Some(t) => Some(t),
        None if long_running => None,
        None => Some(READ_TIMEOUT),
    };
    let mut client = Client::connect(&socket, timeout)?;
    let (method, params) = request(&args.command);

    let show_progress = matches!(args.command, Command::Snapshot { .. })
        && !args.json
        && std::io::stderr().is_terminal();
    let mut line = ProgressLine::new();
    let mut job_id = None;
    let answer = client.call(method, params, |p| {
        job_id.get_or_insert_with(|| p.job_id.clone());
        if show_progress {
            line.update(&p);
        }
    });
    line.clear();
    let result = answer.map_err(|error| Box::new(Failure { error, job_id }))?;

    if args.json {
        let text = serde_json::to_string_pretty(&result).unwrap_or_else(|_| result.to_string());
        print_out(&format!("{text}\n"));
        return Ok(());
    }
    let text = match &args.command {
        Command::Snapshot { .. } => {
            // Locations first, so on a terminal the summary reads as a
            // footnote to them; scripts see only the locations.
            let mut out = render::locations(&result).join("\n");
            out.push('\n');
            print_out(&out);
            eprint!("{}", render::snapshot_summary(&result));
            return Ok(());
        }
        Command::Delete { .. } => format!(
            "deleted {}/{}\n",
            result.get("pool").and_then(Value::as_str).unwrap_or("?"),
            result.get("image").and_then(Value::as_str).unwrap_or("?")
        ),
        Command::Jobs { job_id: Some(_) } => render::job_detail(&result, None),
        Command::Jobs { job_id: None } => render::jobs_table(&result, None),
        Command::Cancel { job_id } => match result.get("cancelling").and_then(Value::as_bool) {
            Some(true) => {
                format!("cancelling job {job_id}; `rbdsnapctl jobs {job_id}` shows its end\n")
            }
            _ => format!(
                "job {job_id} already ended ({})\n",
                result.get("state").and_then(Value::as_str).unwrap_or("?")
            ),
        },
        Command::Disks { .. } => render::disks(&result),
        Command::Status => render::status(&result),
    };
    print_out(&text);
    Ok(())
}

/// The method and params a command sends. Optional params are left out
/// rather than sent as null, so the daemon applies its own defaults.
fn request(command: &Command) -> (&'static str, Value) {
    match command {
        Command::Snapshot {
            domain,
            image,
            pool,
            disks,
            quiesce,
            flatten,
            wait,
        } => {
            let mut p = Map::new();
            p.insert("domain".into(), json!(domain));
            p.insert("image".into(), json!(image));
            if let Some(pool) = pool {
                p.insert("pool".into(), json!(pool));
            }
            if !disks.is_empty() {
                p.insert("disks".into(), json!(disks));
            }
            if let Some(q) = quiesce {
                let q = match q {
                    Quiesce::Required => "required",
                    Quiesce::Preferred => "preferred",
                    Quiesce::Off => "off",
                };
                p.insert("quiesce".into(), json!(q));
            }
            if let Some(f) = flatten {
                let f = match f {
                    Flatten::Sync => "sync",
                    Flatten::Background => "background",
                    Flatten::Cluster => "cluster",
                    Flatten::Never => "none",
                };
                p.insert("flatten".into(), json!(f));
            }
            if *wait {
                p.insert("on_busy".into(), json!("wait"));
            }
            ("snapshot.create", Value::Object(p))
        }
        Command::Delete {
            location: Some(location),
            ..
        } => ("snapshot.delete", json!({ "location": location })),
        Command::Delete { pool, image, .. } => {
            ("snapshot.delete", json!({ "pool": pool, "image": image }))
        }
        Command::Jobs {
            job_id: Some(job_id),
        } => ("jobs.get", json!({ "job_id": job_id })),
        Command::Jobs { job_id: None } => ("jobs.list", json!({})),
        Command::Cancel { job_id } => ("jobs.cancel", json!({ "job_id": job_id })),
        Command::Disks { domain } => ("domain.disks", json!({ "domain": domain })),
        Command::Status => ("daemon.status", json!({})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    fn params(argv: &[&str]) -> (&'static str, Value) {
        let args = Args::try_parse_from(argv).expect("valid command line");
        request(&args.command)
    }

    #[test]
    fn commands_send_their_params_and_omit_what_was_not_given() {
        assert_eq!(
            params(&["c", "snapshot", "vm", "img"]),
            ("snapshot.create", json!({"domain": "vm", "image": "img"}))
        );
        assert_eq!(
            params(&[
                "c",
                "snapshot",
                "vm",
                "img",
                "--pool",
                "p",
                "--disk",
                "vda",
                "--disk",
                "vdb",
                "--quiesce",
                "required",
                "--flatten",
                "none",
                "--json"
            ]),
            (
                "snapshot.create",
                json!({"domain": "vm", "image": "img", "pool": "p", "disks": ["vda", "vdb"],
                       "quiesce": "required", "flatten": "none"})
            )
        );
        assert_eq!(
            params(&["c", "delete", "--location", "rbd://f/p/i/snap"]),
            ("snapshot.delete", json!({"location": "rbd://f/p/i/snap"}))
        );
        assert_eq!(
            params(&["c", "delete", "p", "i"]),
            ("snapshot.delete", json!({"pool": "p", "image": "i"}))
        );
        assert_eq!(params(&["c", "jobs"]), ("jobs.list", json!({})));
        assert_eq!(
            params(&["c", "jobs", "j"]),
            ("jobs.get", json!({"job_id": "j"}))
        );
        assert_eq!(
            params(&["c", "disks", "vm"]),
            ("domain.disks", json!({"domain": "vm"}))
        );
        assert_eq!(params(&["c", "status"]), ("daemon.status", json!({})));
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for argv in [
            &["c", "delete"][..],
            &["c", "delete", "p"],
            &["c", "delete", "--location", "rbd://f/p/i/snap", "p", "i"],
            &["c", "snapshot", "vm"],
            &["c", "snapshot", "vm", "i", "--quiesce", "always"],
            &["c", "--timeout", "-1", "status"],
        ] {
            let err = Args::try_parse_from(argv).expect_err("usage error");
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }
}
