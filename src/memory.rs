//! Giving memory back after a burst. glibc keeps what a burst freed — a
//! thousand connections' buffers, sixteen jobs' librbd and librados state —
//! in its heaps for reuse, so a daemon that served one busy minute would
//! stay at its peak size for the rest of its life. After a burst has
//! drained, `malloc_trim` returns the free pages to the kernel.

/// The burst that makes a trim worth it: this many connections at once.
const BURST_CONNECTIONS: usize = 64;

/// Return free heap pages to the kernel (glibc only; a no-op elsewhere).
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes no pointers and only walks glibc's own
        // heaps under their locks; 0 keeps no extra padding.
        unsafe { nix::libc::malloc_trim(0) };
    }
}

/// [`trim`] a moment from now, on a blocking thread: the answer that made
/// the daemon idle goes out first. Without a runtime, trims at once.
pub fn trim_soon() {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let _ = tokio::task::spawn_blocking(trim).await;
            });
        }
        Err(_) => trim(),
    }
}

/// Watches the number of open connections and trims once a burst has
/// drained (fewer than half of its peak left open).
#[derive(Debug, Default)]
pub struct BurstWatch {
    peak: usize,
}

impl BurstWatch {
    /// Note the current number of open connections; trims when due.
    pub fn connections(&mut self, open: usize) {
        self.peak = self.peak.max(open);
        if self.peak >= BURST_CONNECTIONS && open < self.peak / 2 {
            trim_soon();
            self.peak = open;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_burst_has_drained_then_follows_the_new_level() {
        let mut watch = BurstWatch::default();
        for open in [1, 10, 200, 150] {
            watch.connections(open);
        }
        assert_eq!(watch.peak, 200);
        watch.connections(99);
        assert_eq!(watch.peak, 99, "trimmed and restarted from the new level");
        watch.connections(60);
        assert_eq!(watch.peak, 99, "more than half still open: no trim");
        watch.connections(40);
        assert_eq!(watch.peak, 40, "drained again: trimmed");
        watch.connections(5);
        assert_eq!(watch.peak, 40, "no burst since: no trim");
    }
}
