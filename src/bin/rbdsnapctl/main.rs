//! `rbdsnapctl`, the command-line client of the rbdsnapd socket: take and
//! delete snapshots, look at jobs, a domain's disks and the daemon's health.
//!
//! Output is for people by default (results on stdout, progress and
//! summaries on stderr, so `$(rbdsnapctl snapshot …)` is just the
//! locations) and for programs with `--json` (the daemon's result or error
//! object, verbatim, on stdout). The exit status says what kind of failure
//! happened; see [`cli::EXIT_STATUS`].

mod cli;
mod follow;
mod progress;
mod render;
mod report;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rbdsnapd::client::Client;
use rbdsnapd::protocol::OnBusy;
use serde_json::{json, Map, Value};

use cli::{Args, Command, GuardAction};
use progress::ProgressLine;
use report::{exit_code, print_out, report, Failure};

const DEFAULT_SOCKET: &str = "/run/rbdsnapd/rbdsnapd.sock";
const SOCKET_ENV: &str = "RBDSNAPD_SOCKET";

/// Commands that only read get this long unless `--timeout` says
/// otherwise; a snapshot or delete may legitimately take hours (a flatten
/// of a big image), and the daemon bounds every step itself.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

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
    if let Command::Snapshot { follow: true, .. } = args.command {
        follow::flatten(&mut client, &result, show_progress)?;
    }

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
        Command::Guard {
            action: GuardAction::Dismiss { domain_uuid },
        } => format!(
            "dismissed the thaw guard on {domain_uuid} (job {}); the daemon no longer \
             reports or thaws it\n",
            result["guard"]["job_id"].as_str().unwrap_or("?")
        ),
        Command::Status => render::status(&result),
        Command::Metrics => result.as_str().unwrap_or_default().to_string(),
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
            request_id,
            wait_if_busy,
            ..
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
                p.insert("quiesce".into(), json!(q));
            }
            if let Some(f) = flatten {
                p.insert("flatten".into(), json!(f));
            }
            if let Some(id) = request_id {
                p.insert("request_id".into(), json!(id));
            }
            if *wait_if_busy {
                p.insert("on_busy".into(), json!(OnBusy::Wait));
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
        Command::Guard {
            action: GuardAction::Dismiss { domain_uuid },
        } => ("guard.dismiss", json!({ "domain_uuid": domain_uuid })),
        Command::Status => ("daemon.status", json!({})),
        Command::Metrics => ("metrics", json!({})),
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
        // --wait is the old name of --wait-if-busy; --follow is the client's own
        for wait in ["--wait-if-busy", "--wait"] {
            assert_eq!(
                params(&[
                    "c",
                    "snapshot",
                    "vm",
                    "img",
                    "--request-id",
                    "r-1",
                    wait,
                    "--follow"
                ]),
                (
                    "snapshot.create",
                    json!({"domain": "vm", "image": "img", "request_id": "r-1", "on_busy": "wait"})
                )
            );
        }
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
