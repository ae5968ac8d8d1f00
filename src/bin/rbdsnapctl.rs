//! `rbdsnapctl`, the command-line client of the daemon's socket. Its commands
//! (snapshot, delete, jobs, disks, status) arrive with the daemon issue.

use clap::Parser;

/// Command line of the client.
#[derive(Debug, Parser)]
#[command(version, about = "Client for the rbdsnapd socket")]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "rbdsnapctl {}: the client commands are not built yet; see the README's status section",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
