//! The systemd bed (`dev/testbed vm-up`): a Debian 12 VM with systemd as
//! PID 1, reached over ssh. The tests install the project's .deb there and
//! assert on systemd's own view: `systemctl show`, `journalctl -o json`.
//! One VM serves every test of a binary: [`Vm::lock`] runs them one at a
//! time.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rbdsnapd::client::{Client, ClientError};
use serde_json::Value;

/// The daemon's socket inside the VM, as the package's units put it.
pub const SOCKET: &str = "/run/rbdsnapd/rbdsnapd.sock";
/// The configuration file the package installs (a conffile).
pub const CONFIG: &str = "/etc/rbdsnapd/rbdsnapd.toml";

/// Where the VM is and what it holds.
#[derive(Debug, Clone)]
pub struct Vm {
    ssh_config: String,
    /// The .deb inside the VM.
    pub deb: String,
    /// The same .deb on the host (for lintian).
    pub deb_host: String,
    /// libvirt URI of the test-driver domains, over libvirtd's socket.
    pub libvirt_uri: String,
    /// The VM's cluster, seen from the host with admin (for checks).
    pub ceph: super::Ceph,
    /// The bed directory on the host.
    pub dir: String,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The systemd VM, or `None` (after saying so) outside CI.
pub fn vm() -> Option<Vm> {
    let var = |k: &str| std::env::var(k).map_err(|_| k.to_string());
    let found = (|| {
        let ceph_conf = var("RBDSNAPD_TEST_VM_CEPH_CONF")?;
        Ok(Vm {
            ssh_config: var("RBDSNAPD_TEST_VM_SSH_CONFIG")?,
            deb: var("RBDSNAPD_TEST_VM_DEB")?,
            deb_host: var("RBDSNAPD_TEST_VM_DEB_HOST")?,
            libvirt_uri: var("RBDSNAPD_TEST_VM_LIBVIRT_URI")?,
            dir: var("RBDSNAPD_TEST_VM")?,
            ceph: super::Ceph {
                conf: ceph_conf,
                id: var("RBDSNAPD_TEST_VM_CEPH_ID")?,
                admin_id: "admin".into(),
                fsid: var("RBDSNAPD_TEST_VM_FSID")?,
                pool_vms: "vms".into(),
                pool_images: "images".into(),
                mon_v1: String::new(),
            },
        })
    })();
    super::require("systemd VM", found)
}

impl Vm {
    /// Run the tests of one binary one after another (they share the VM).
    pub fn lock() -> MutexGuard<'static, ()> {
        ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `script` with the VM's shell; the raw output.
    pub fn run(&self, script: &str) -> Output {
        Command::new("timeout")
            .args(["300", "ssh", "-F", &self.ssh_config, "vm", script])
            .output()
            .expect("run ssh")
    }

    /// Run `script`; its stdout, or a panic with what it printed.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "in the VM: {script}\nexit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One property of a unit, as `systemctl show` gives it.
    pub fn prop(&self, unit: &str, name: &str) -> String {
        self.sh(&format!("systemctl show -P {name} {unit}"))
            .trim()
            .to_string()
    }

    /// Wait until `unit`'s property has `value`; the time it took.
    pub fn wait_prop(&self, unit: &str, name: &str, value: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.prop(unit, name);
            if now == value {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{unit} {name} is {now:?}, not {value:?}, after {within:?}:\n{}",
                self.sh(&format!("systemctl status --no-pager -l {unit} || true; journalctl --no-pager -n 40 -u {unit}"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The journal's entries (`journalctl -o json` objects) for `args`.
    pub fn journal(&self, args: &str) -> Vec<Value> {
        self.sh(&format!("journalctl --no-pager -o json {args}"))
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Whether the package is installed (not only its configuration).
    pub fn installed(&self) -> bool {
        self.run("dpkg-query -W -f='${db:Status-Abbrev}' rbdsnapd")
            .stdout
            .starts_with(b"ii")
    }

    /// `apt install ./rbdsnapd.deb`, as an operator does; apt's output.
    pub fn install(&self) -> String {
        self.sh(&format!(
            "cd $(dirname {deb}) && DEBIAN_FRONTEND=noninteractive apt-get install -y ./$(basename {deb}) 2>&1",
            deb = self.deb
        ))
    }

    /// The package installed and configured for the VM's cluster and
    /// libvirtd (least-privilege Ceph user), its service running.
    pub fn ready(&self) {
        self.ready_with("", "");
    }

    /// [`Vm::ready`] with `top` and `ceph` added to the configuration (as
    /// [`Vm::configure`] takes them).
    pub fn ready_with(&self, top: &str, ceph: &str) {
        if !self.installed() {
            self.install();
        }
        self.configure(top, ceph);
        self.sh(
            "systemctl reset-failed rbdsnapd.service rbdsnapd.socket 2>/dev/null; \
                 systemctl start rbdsnapd.socket; systemctl restart rbdsnapd.service",
        );
        self.wait_prop(
            "rbdsnapd.service",
            "ActiveState",
            "active",
            Duration::from_secs(60),
        );
    }

    /// Write the daemon's configuration: the VM's cluster and libvirt, with
    /// `top` (top-level keys) and `ceph` (keys of `[ceph]`) added.
    pub fn configure(&self, top: &str, ceph: &str) {
        let toml = format!(
            "{top}\n[libvirt]\nuri = \"{uri}\"\n\n[ceph]\nconf = \"/etc/ceph/ceph.conf\"\nclient_id = \"{id}\"\n{ceph}\n",
            uri = self.libvirt_uri,
            id = self.ceph.id
        );
        self.sh(&format!("cat > {CONFIG} <<'EOF'\n{toml}EOF"));
    }

    /// A client on the daemon's socket in the VM, forwarded to the host by
    /// the ssh connection (the daemon sees sshd, root, as its caller).
    pub fn client(&self, timeout: Option<Duration>) -> Result<Client, ClientError> {
        let local = self.forwarded_socket();
        Client::connect(&local, timeout)
    }

    fn forwarded_socket(&self) -> PathBuf {
        let local = PathBuf::from(format!("{}/rbdsnapd.sock", self.dir));
        if !local.exists() {
            let out = Command::new("ssh")
                .args(["-F", &self.ssh_config, "-O", "forward", "-L"])
                .arg(format!("{}:{SOCKET}", local.display()))
                .arg("vm")
                .output()
                .expect("ssh -O forward");
            assert!(
                out.status.success(),
                "forwarding the socket: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        local
    }

    /// Call `method` and return its result, panicking on an error answer.
    pub fn call(&self, method: &str, params: Value) -> Value {
        let mut client = self
            .client(Some(Duration::from_secs(300)))
            .expect("connect");
        client
            .call(method, params, |_| {})
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// The main process of the service, 0 when it has none.
    pub fn main_pid(&self) -> u32 {
        self.prop("rbdsnapd.service", "MainPID")
            .parse()
            .expect("MainPID")
    }
}
