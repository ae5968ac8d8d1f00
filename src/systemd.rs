//! systemd integration: READY/STATUS/WATCHDOG/STOPPING notifications and
//! socket activation (LISTEN_FDS). Built by the daemon issue.
