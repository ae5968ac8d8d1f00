//! The one-line progress display of `snapshot` on a terminal: redrawn in
//! place with `\r`, at most a few times a second (a flatten reports every
//! few MiB, far more often than anyone can read), and cleared before the
//! summary so the terminal keeps only the result.

use std::io::Write;
use std::time::{Duration, Instant};

use rbdsnapd::protocol::ProgressParams;

use crate::render;

/// Shortest time between two redraws of the same phase.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// Erase from the cursor to the end of the line (every terminal emulator
/// in use understands it; padding with spaces would need the old width).
const CLEAR_TO_EOL: &str = "\x1b[K";

/// The progress line on stderr.
#[derive(Debug)]
pub struct ProgressLine {
    started: Instant,
    last_draw: Option<Instant>,
    last_phase: String,
    drawn: bool,
}

impl ProgressLine {
    /// A line whose clock starts now.
    pub fn new() -> ProgressLine {
        ProgressLine {
            started: Instant::now(),
            last_draw: None,
            last_phase: String::new(),
            drawn: false,
        }
    }

    /// Show `p`, unless the same phase was drawn a moment ago (a phase
    /// change and a phase's last step are always shown).
    pub fn update(&mut self, p: &ProgressParams) {
        let now = Instant::now();
        let recent = self
            .last_draw
            .is_some_and(|t| now.duration_since(t) < REDRAW_EVERY);
        let finished = p.total > 0 && p.done >= p.total;
        if recent && p.phase == self.last_phase && !finished {
            return;
        }
        self.last_draw = Some(now);
        self.last_phase.clone_from(&p.phase);
        self.drawn = true;
        let text = describe(p, now.duration_since(self.started));
        // A progress line that cannot be written is not worth failing the
        // snapshot for.
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{text}{CLEAR_TO_EOL}");
        let _ = err.flush();
    }

    /// Erase the line, if anything was drawn.
    pub fn clear(&mut self) {
        if self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{CLEAR_TO_EOL}");
            let _ = err.flush();
            self.drawn = false;
        }
    }
}

/// The text of the line: elapsed time, phase, and how far it got.
pub fn describe(p: &ProgressParams, elapsed: Duration) -> String {
    let how_far = if p.phase == "flatten" && p.total > 0 {
        format!(
            "{:>3}%  {} / {}",
            p.done.saturating_mul(100) / p.total,
            render::bytes(p.done),
            render::bytes(p.total)
        )
    } else if let Some(position) = p.position {
        format!("#{position} in the host's flatten queue")
    } else {
        render::phase_progress(&p.phase, p.done, p.total)
    };
    let line = format!("[{:>5.1}s] {:<9} {how_far}", elapsed.as_secs_f64(), p.phase);
    line.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(phase: &str, done: u64, total: u64) -> ProgressParams {
        ProgressParams {
            id: json!(1),
            job_id: "j".into(),
            phase: phase.into(),
            done,
            total,
            position: None,
        }
    }

    #[test]
    fn describes_each_phase() {
        let t = Duration::from_millis(3300);
        assert_eq!(describe(&p("preflight", 0, 0), t), "[  3.3s] preflight");
        assert_eq!(describe(&p("clone", 1, 2), t), "[  3.3s] clone     1/2");
        assert_eq!(
            describe(&p("flatten", 512 << 20, 2 << 30), t),
            "[  3.3s] flatten    25%  512.0 MiB / 2.0 GiB"
        );
        assert_eq!(describe(&p("flatten", 0, 0), t), "[  3.3s] flatten");
    }
}
