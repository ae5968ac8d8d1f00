//! `rbdsnapd`, the daemon: configuration, logging, then [`rbdsnapd::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rbdsnapd::cli::Args;
use rbdsnapd::config::{Config, DEFAULT_PATH, EXIT_CONFIG};

fn main() -> ExitCode {
    // before any thread exists: sd_notify reads and clears LISTEN_FDS
    let activated = match rbdsnapd::systemd::activated_listener() {
        Ok(listener) => listener,
        Err(e) => return fail(format!("socket activation: {e}")),
    };
    let mut args = Args::parse();
    let (path, explicit) = match args.config.take() {
        Some(path) => (path, true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let check_only = args.check_config;
    let config = match Config::load(&path, explicit).map(|c| args.apply(c)) {
        Ok(config) => config,
        Err(e) => return config_error(e),
    };
    if let Err(e) = config.validate() {
        return config_error(e);
    }
    if check_only {
        println!("{config:#?}");
        return ExitCode::SUCCESS;
    }
    rbdsnapd::logging::init(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("tokio runtime: {e}")),
    };
    match runtime.block_on(rbdsnapd::run::run(config, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(rbdsnapd::run::RunError::Config(e)) => config_error(e),
        Err(e) => fail(e.to_string()),
    }
}

fn config_error(e: rbdsnapd::config::ConfigError) -> ExitCode {
    fail(e.to_string());
    ExitCode::from(EXIT_CONFIG)
}

fn fail(message: String) -> ExitCode {
    eprintln!("rbdsnapd: {message}");
    tracing::error!("{message}");
    ExitCode::FAILURE
}
