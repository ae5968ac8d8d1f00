//! The test bed as the integration tests see it.
//!
//! `dev/test` brings up a throwaway Ceph cluster, libvirtd and a tiny guest
//! (dev/testbed) and exports where they are as `RBDSNAPD_TEST_*` variables.
//! A test asks for the parts it needs; when they are missing it fails loudly
//! under CI (or `RBDSNAPD_REQUIRE_BED=1`, which dev/test sets) and otherwise
//! says on stderr that it skipped — never silently.

#![allow(dead_code)] // each test binary uses its own subset of the helpers

pub mod daemon;
pub mod extra;
pub mod hang;
pub mod openrpc;
pub mod vm;

use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the bed's Ceph cluster is and what it holds.
#[derive(Debug, Clone)]
pub struct Ceph {
    /// ceph.conf of the throwaway cluster (never /etc/ceph).
    pub conf: String,
    /// cephx client id (without `client.`) the daemon and the engine run
    /// as: a least-privilege user (`profile rbd` on the bed's pools).
    pub id: String,
    /// cephx id with every cap, for setting images up and checking what
    /// the daemon left (a check must not be limited by the daemon's caps).
    pub admin_id: String,
    /// The cluster's fsid, as the bed generated it.
    pub fsid: String,
    /// Pool of instance disks.
    pub pool_vms: String,
    /// Pool of images (snapshot destinations).
    pub pool_images: String,
    /// msgr v1 address of the mon, as libvirt domains reference it.
    pub mon_v1: String,
}

/// libvirt's in-process test driver loaded with the bed's domains.
#[derive(Debug, Clone)]
pub struct TestDriver {
    /// `test:///abs/path/test-node.xml`.
    pub uri: String,
}

/// The real guest booted by libvirtd from an RBD disk.
#[derive(Debug, Clone)]
pub struct Guest {
    /// URI of the libvirtd that runs it.
    pub uri: String,
    /// Domain name.
    pub name: String,
    /// `pool/image` of its RBD disk.
    pub image: String,
    /// Where the disk's ext4 filesystem is mounted inside the guest.
    pub mount: String,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| name.to_string())
}

fn bed_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("RBDSNAPD_REQUIRE_BED").is_ok_and(|v| v == "1")
}

/// Turn a missing part into a loud failure (CI) or a loud skip (elsewhere).
fn require<T>(part: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(missing) if bed_required() => panic!(
            "test bed part `{part}` is missing ({missing} is not set): run the tests through dev/test"
        ),
        Err(missing) => {
            eprintln!("SKIPPED: no test bed {part} ({missing} is not set); run dev/test for the real thing");
            None
        }
    }
}

/// The bed's Ceph cluster, or `None` (after saying so) outside CI.
pub fn ceph() -> Option<Ceph> {
    let found = (|| {
        Ok(Ceph {
            conf: var("RBDSNAPD_TEST_CEPH_CONF")?,
            id: var("RBDSNAPD_TEST_CEPH_ID")?,
            admin_id: var("RBDSNAPD_TEST_CEPH_ADMIN_ID")?,
            fsid: var("RBDSNAPD_TEST_FSID")?,
            pool_vms: var("RBDSNAPD_TEST_POOL_VMS")?,
            pool_images: var("RBDSNAPD_TEST_POOL_IMAGES")?,
            mon_v1: var("RBDSNAPD_TEST_MON_V1")?,
        })
    })();
    require("ceph cluster", found)
}

/// The test-driver URI, or `None` (after saying so) outside CI.
pub fn test_driver() -> Option<TestDriver> {
    require(
        "libvirt test driver",
        var("RBDSNAPD_TEST_TESTDRV_URI").map(|uri| TestDriver { uri }),
    )
}

/// The real guest, or `None` (after saying so) outside CI.
pub fn guest() -> Option<Guest> {
    let found = (|| {
        Ok(Guest {
            uri: var("RBDSNAPD_TEST_LIBVIRT_URI")?,
            name: var("RBDSNAPD_TEST_GUEST")?,
            image: var("RBDSNAPD_TEST_GUEST_IMAGE")?,
            mount: var("RBDSNAPD_TEST_GUEST_MOUNT")?,
        })
    })();
    require("guest", found)
}

/// Deterministic, non-zero bytes (RBD reads unwritten extents back as
/// zeros, so a zeroed buffer would prove little).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

impl Ceph {
    /// Run the `rbd` CLI against the bed's cluster; panics with its stderr
    /// on failure so the test says what Ceph answered.
    pub fn rbd(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.rbd_output(args, stdin);
        assert!(
            out.status.success(),
            "rbd {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Like [`Ceph::rbd`] but returns the raw output, success or not.
    pub fn rbd_output(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("timeout")
            .arg("60")
            .arg("rbd")
            .args(["--conf", &self.conf, "--id", &self.admin_id])
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rbd");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("rbd stdin");
            pipe.write_all(data).expect("write to rbd");
        }
        child.wait_with_output().expect("wait for rbd")
    }
}

impl Guest {
    /// Connect to the libvirtd that runs the guest and look the domain up.
    pub fn domain(&self) -> (virt::connect::Connect, virt::domain::Domain) {
        virt::error::clear_error_callback();
        let conn = virt::connect::Connect::open(Some(&self.uri))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.uri));
        let dom = conn
            .lookup_domain_by_name(&self.name)
            .unwrap_or_else(|e| panic!("guest {} not found: {e}", self.name));
        (conn, dom)
    }

    /// Send one command to the guest agent and return its `return` member.
    pub fn agent(&self, command: serde_json::Value) -> serde_json::Value {
        let (_conn, dom) = self.domain();
        let reply = dom
            .qemu_agent_command(&command.to_string(), 10, 0)
            .unwrap_or_else(|e| panic!("guest agent refused {command}: {e}"));
        let mut reply: serde_json::Value =
            serde_json::from_str(&reply).expect("agent reply is JSON");
        reply
            .get_mut("return")
            .map(serde_json::Value::take)
            .unwrap_or_else(|| panic!("agent reply without `return`: {reply}"))
    }

    /// The agent's own view: `"frozen"` or `"thawed"`.
    pub fn freeze_status(&self) -> serde_json::Value {
        self.agent(serde_json::json!({"execute": "guest-fsfreeze-status"}))
    }

    /// Set one of the fsfreeze hook's controls (`freeze-delay`,
    /// `freeze-fail`, …; see dev/guest/fsfreeze-hook); `""` switches it off.
    pub fn hook(&self, control: &str, value: &str) {
        self.write_file(&format!("/etc/rbdsnapd-test/{control}"), value.as_bytes());
    }

    /// Write `data` to `path` inside the guest through the agent.
    pub fn write_file(&self, path: &str, data: &[u8]) {
        use base64::Engine;
        let handle = self.agent(serde_json::json!({
            "execute": "guest-file-open", "arguments": {"path": path, "mode": "w"}}));
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        let written = self.agent(serde_json::json!({
            "execute": "guest-file-write", "arguments": {"handle": handle, "buf-b64": b64}}));
        assert_eq!(
            written["count"].as_u64(),
            Some(data.len() as u64),
            "short write in guest"
        );
        self.agent(serde_json::json!({
            "execute": "guest-file-close", "arguments": {"handle": handle}}));
    }

    /// Read the whole file at `path` inside the guest through the agent.
    pub fn read_file(&self, path: &str) -> Vec<u8> {
        use base64::Engine;
        let handle = self.agent(serde_json::json!({
            "execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}}));
        let mut data = Vec::new();
        loop {
            let chunk = self.agent(serde_json::json!({
                "execute": "guest-file-read", "arguments": {"handle": handle, "count": 65536}}));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(chunk["buf-b64"].as_str().unwrap_or_default())
                .expect("agent returns base64");
            data.extend_from_slice(&bytes);
            if chunk["eof"].as_bool().unwrap_or(true) || bytes.is_empty() {
                break;
            }
        }
        self.agent(serde_json::json!({
            "execute": "guest-file-close", "arguments": {"handle": handle}}));
        data
    }
}

/// The real adapters, connected to the bed.
pub mod engine {
    use std::sync::Arc;
    use std::time::Duration;

    use rbdsnapd::libvirt::{Hypervisor, LibvirtHypervisor};
    use rbdsnapd::rbd::{CephStore, ImageSpec, ImageStore};
    use rbdsnapd::snapshot::Settings;

    /// The bed's cluster through the daemon's own image store.
    pub fn store(ceph: &super::Ceph) -> Arc<dyn ImageStore> {
        Arc::new(
            CephStore::connect(std::path::Path::new(&ceph.conf), &ceph.id)
                .expect("connect to the bed"),
        )
    }

    /// A libvirt connection through the daemon's own adapter.
    pub fn hypervisor(uri: &str) -> Arc<dyn Hypervisor> {
        Arc::new(LibvirtHypervisor::connect(uri, 5).expect("connect to libvirt"))
    }

    /// Settings as a test host would configure them.
    pub fn settings(default_pool: &str) -> Settings {
        Settings {
            default_pool: Some(default_pool.to_string()),
            freeze_deadline: Duration::from_secs(10),
            agent_timeout: Duration::from_secs(10),
            call_deadline: Duration::from_secs(60),
            flatten_deadline: Duration::from_secs(600),
            flatten_stall: Duration::from_secs(60),
            clone_format: None,
            host: "rbdsnapd-tests".into(),
            allowed_pools: None,
            pause_vcpus: true,
        }
    }

    /// Remove an image a test made, with its snapshots; absent is fine.
    pub fn remove(store: &Arc<dyn ImageStore>, pool: &str, name: &str) {
        let spec = ImageSpec::new(pool, name);
        match rbdsnapd::snapshot::saga::remove_image_and_snapshots(store.as_ref(), &spec) {
            Ok(()) => {}
            Err(e) if e.kind == rbdsnapd::rbd::RbdErrorKind::NotFound => {}
            Err(e) => panic!("clean-up of {spec}: {e}"),
        }
    }
}

impl Ceph {
    /// A new cephx user with `caps` (pairs such as `("mon", "profile rbd")`),
    /// its keyring written where the bed's ceph.conf looks for it; the id.
    pub fn user_with_caps(&self, prefix: &str, caps: &[(&str, &str)]) -> String {
        let id = unique(prefix);
        let mut args = vec!["auth", "get-or-create"];
        let entity = format!("client.{id}");
        args.push(&entity);
        for (service, cap) in caps {
            args.extend([*service, *cap]);
        }
        let out = Command::new("timeout")
            .args(["60", "ceph", "--conf", &self.conf, "--id", &self.admin_id])
            .args(&args)
            .output()
            .expect("run ceph auth");
        assert!(
            out.status.success(),
            "ceph auth: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = std::path::Path::new(&self.conf).parent().expect("bed dir");
        std::fs::write(dir.join(format!("ceph.client.{id}.keyring")), &out.stdout)
            .expect("write keyring");
        id
    }

    /// Write `data` at `offset` into an existing image (python3-rbd: the
    /// daemon's own store has no data path, and the CLI cannot write in place).
    pub fn write_image(&self, image: &str, offset: u64, data: &[u8]) {
        use std::io::Write;
        let (pool, name) = image.split_once('/').expect("pool/image");
        let script = format!(
            "import sys, rados, rbd\n\
             c = rados.Rados(conffile={conf:?}, name='client.{id}')\n\
             c.connect(timeout=30)\n\
             io = c.open_ioctx({pool:?})\n\
             img = rbd.Image(io, {name:?})\n\
             img.write(sys.stdin.buffer.read(), {offset})\n\
             img.close(); io.close(); c.shutdown()\n",
            conf = self.conf,
            id = self.admin_id,
        );
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(data)
            .expect("write");
        assert!(
            child.wait().expect("python3").success(),
            "writing into {image} failed"
        );
    }

    /// Keep `image` open read-write in another client (python3-rbd) until
    /// the returned child is dropped: what a guest or a tool holding the
    /// image looks like to Ceph (a watcher).
    pub fn hold_open(&self, image: &str) -> Holder {
        use std::io::BufRead;
        let (pool, name) = image.split_once('/').expect("pool/image");
        let script = format!(
            "import sys, rados, rbd\n\
             c = rados.Rados(conffile={conf:?}, name='client.{id}')\n\
             c.connect(timeout=30)\n\
             io = c.open_ioctx({pool:?})\n\
             img = rbd.Image(io, {name:?})\n\
             print('open', flush=True)\n\
             sys.stdin.read()\n\
             img.close(); io.close(); c.shutdown()\n",
            conf = self.conf,
            id = self.admin_id,
        );
        let mut child = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "open", "could not open {image}");
        Holder(child)
    }

    /// The image's bytes (`pool/image` or `pool/image@snap`).
    pub fn export(&self, image: &str) -> Vec<u8> {
        self.rbd(&["export", "--no-progress", image, "-"], None)
    }

    /// Snapshot names of an image, from the rbd CLI.
    pub fn snapshots(&self, image: &str) -> Vec<(String, bool)> {
        let out = self.rbd(&["snap", "ls", "--format", "json", image], None);
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out).expect("snap ls JSON");
        list.iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_string(),
                    s["protected"] == "true",
                )
            })
            .collect()
    }

    /// `rbd info` as JSON.
    pub fn info(&self, image: &str) -> serde_json::Value {
        serde_json::from_slice(&self.rbd(&["info", "--format", "json", image], None))
            .expect("info JSON")
    }

    /// The daemon's temporary snapshots (`rbdsnapd-tmp-…`) on an image
    /// (there must be none once a job is over).
    pub fn temp_snapshots(&self, image: &str) -> Vec<String> {
        self.snapshots(image)
            .into_iter()
            .map(|s| s.0)
            .filter(|s| s.starts_with("rbdsnapd-tmp-"))
            .collect()
    }

    /// Whether an image exists.
    pub fn exists(&self, image: &str) -> bool {
        self.rbd_output(&["info", image], None).status.success()
    }
}

/// Grows a test-driver disk and fills it for a slow flatten; shrinks it
/// back to the bed's empty 16 MiB when dropped.
pub struct BigDisk<'a> {
    ceph: &'a Ceph,
    image: &'a str,
}

impl<'a> BigDisk<'a> {
    pub fn new(ceph: &'a Ceph, image: &'a str, size: &str, written: &str) -> Self {
        let disk = BigDisk { ceph, image };
        ceph.rbd(&["resize", "--no-progress", "--size", size, image], None);
        ceph.rbd(
            &[
                "bench",
                "--io-type",
                "write",
                "--io-size",
                "4M",
                "--io-total",
                written,
                "--io-pattern",
                "seq",
                image,
            ],
            None,
        );
        disk
    }
}

impl Drop for BigDisk<'_> {
    fn drop(&mut self) {
        // through 0: the bed's image was empty, and must be again
        for size in ["0", "16M"] {
            let out = self.ceph.rbd_output(
                &[
                    "resize",
                    "--no-progress",
                    "--allow-shrink",
                    "--size",
                    size,
                    self.image,
                ],
                None,
            );
            if !out.status.success() {
                eprintln!(
                    "could not shrink {} back: {}",
                    self.image,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// A client holding an image open; closes it (EOF on its stdin) on drop.
pub struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}
