//! Configuration: a TOML file (default `/etc/rbdsnapd/rbdsnapd.toml`) with
//! command-line overrides, validated before the daemon binds anything.
//!
//! Filled in by the daemon issue: socket path, mode and group, libvirt URI,
//! ceph.conf and client id, default images pool, quiesce default, freeze
//! deadline, agent timeout, allowed users and groups, state directory, log
//! format.
