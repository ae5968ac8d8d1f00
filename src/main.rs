//! `rbdsnapd`, the daemon. The socket service is built by the daemon issue;
//! until then the binary only reports its version and what it lacks.

use clap::Parser;

/// Command line of the daemon.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Quiesced RBD direct snapshots of running libvirt/QEMU guests"
)]
struct Args {}

fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    eprintln!(
        "rbdsnapd {}: the socket service is not built yet; see the README's status section",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
