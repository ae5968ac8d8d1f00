//! The Unix socket server: own socket or systemd socket activation, one task
//! per connection, line framing with a size limit, SO_PEERCRED checks against
//! the allowed users and groups, dispatch to the workflow. Built by the daemon
//! issue.
