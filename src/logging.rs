//! Logs through `tracing`: the journal when systemd runs the daemon,
//! readable text or JSON lines on stderr otherwise. Job lines carry the job
//! id, domain and image from the job's span. `RUST_LOG` refines the level.

use std::io::IsTerminal;

use tracing_journald::{Priority, PriorityMappings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// Install the global subscriber for `format`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match format {
        // systemd sets JOURNAL_STREAM when our stderr is the journal
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    };
    let layer: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        // No "F_" prefix: a job's lines carry JOB_ID, DOMAIN and IMAGE
        // (from its span) as fields, for `journalctl JOB_ID=…`. None of our
        // field names is one journald keeps for itself.
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(journald) => journald
                .with_field_prefix(None)
                // syslog's meaning: info is 6 (tracing-journald says 5,
                // "notice"), debug 7
                .with_priority_mappings(PriorityMappings {
                    info: Priority::Informational,
                    debug: Priority::Debug,
                    ..PriorityMappings::new()
                })
                .boxed(),
            Err(e) => {
                eprintln!("rbdsnapd: journald unavailable ({e}); logging to stderr");
                fmt::layer().with_writer(std::io::stderr).boxed()
            }
        },
        _ => fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(filter)
        .try_init();
}
