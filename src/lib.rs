//! rbdsnapd: quiesced "RBD direct snapshots" of running libvirt/QEMU guests.
//!
//! A local agent asks the daemon, as JSON-RPC over a Unix socket, for an image
//! snapshot of a running domain's disk. The daemon finds the disk through
//! libvirt, freezes the guest's filesystems through the QEMU guest agent,
//! takes a temporary RBD snapshot while (and only while) the guest is frozen,
//! thaws it, then clones, flattens and snapshots a new image inside Ceph and
//! answers with `rbd://<fsid>/<pool>/<image>/snap`.
//!
//! The layers, each a module, dependencies pointing down only:
//!
//! - [`protocol`]: the wire contract (requests, responses, notifications,
//!   error codes) and the typed choices (quiesce, flatten, on_busy) that the
//!   config, both command lines and the workflow share. Nothing else.
//! - [`server`]: the Unix socket listener, line framing, peer credentials and
//!   dispatch to the workflow.
//! - [`snapshot`]: the direct-snapshot saga: steps with compensations, driven
//!   against the [`libvirt`] and [`rbd`] traits; job registry.
//! - [`journal`] and [`recovery`]: the fsync'd intent log and what the daemon
//!   does with it at start (thaw, roll back or finish).
//! - [`libvirt`]: the hypervisor adapter over the `virt` crate.
//! - [`rbd`]: the image-store adapter: librados via the `ceph` crate's
//!   bindings, librbd via the project's own small FFI layer. The only home of
//!   `unsafe` for Ceph.
//! - [`daemon`]: the daemon's state (backends, jobs, counters) and one
//!   handler per method; the one mapping of internal errors to the wire.
//! - [`run`]: the process life: bind, connect, READY, serve, drain on
//!   SIGTERM. [`logging`]: tracing to the journal, text or JSON.
//! - [`systemd`]: readiness, status, watchdog and socket activation.
//! - [`config`]: the TOML file and command-line overrides, validated at start.
//! - [`memory`]: giving the heap back to the kernel after a burst.
//! - [`openrpc`]: the protocol as an OpenRPC document, generated from the
//!   types of [`protocol`] and [`daemon`] (served by `rpc.discover`).
//! - [`policy`]: per-caller rules (domains, pools, deletes).
//! - [`owners`]: every blocking C call runs through its backend's owner,
//!   with bounded capacity and a lane reserved for thaws.
//! - [`client`]: a small blocking client of the socket, for `rbdsnapctl`.

pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod journal;
pub mod libvirt;
pub mod logging;
pub mod memory;
pub mod openrpc;
pub mod owners;
pub mod policy;
pub mod protocol;
pub mod rbd;
pub mod recovery;
pub mod run;
pub mod server;
pub mod snapshot;
pub mod systemd;
