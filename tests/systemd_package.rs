//! The Debian package in a VM with systemd as PID 1 (dev/testbed vm-up):
//! it installs as an operator installs it, creates its group, enables and
//! starts its units, keeps its configuration as a conffile, removes and
//! purges as Debian expects, passes lintian, and its service keeps its
//! security rating.

mod common;

use common::vm::{vm, Vm, CONFIG};

/// lintian warnings we accept, each with the reason.
const ACCEPTED_WARNINGS: &[(&str, &str)] = &[(
    "initial-upload-closes-no-bugs",
    "the package is not uploaded to Debian, so there is no ITP bug to close",
)];

fn purge(vm: &Vm) {
    vm.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y rbdsnapd 2>&1 || true");
}

fn status_abbrev(vm: &Vm) -> String {
    String::from_utf8_lossy(
        &vm.run("dpkg-query -W -f='${db:Status-Abbrev}' rbdsnapd 2>/dev/null")
            .stdout,
    )
    .trim()
    .to_string()
}

#[test]
fn the_package_installs_creates_its_group_and_starts_its_units() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    purge(&vm);
    // the package must make the group itself, not find it from an earlier run
    vm.sh("getent group rbdsnapd >/dev/null && groupdel rbdsnapd; true");
    let apt = vm.install();
    assert!(vm.installed(), "{apt}");
    assert!(
        vm.sh("getent group rbdsnapd").starts_with("rbdsnapd:x:"),
        "the group exists"
    );
    for unit in ["rbdsnapd.socket", "rbdsnapd.service"] {
        assert_eq!(vm.prop(unit, "UnitFileState"), "enabled", "{unit}");
    }
    assert_eq!(vm.prop("rbdsnapd.socket", "ActiveState"), "active");
    assert_eq!(
        vm.sh("stat -c '%U:%G %a' /run/rbdsnapd/rbdsnapd.sock")
            .trim(),
        "root:rbdsnapd 660",
        "the socket unit's owner and mode"
    );
    let conffiles = vm.sh("dpkg-query -W -f='${Conffiles}' rbdsnapd");
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");
    // the man pages are there and carry what --help says
    let files = vm.sh("dpkg -L rbdsnapd");
    for page in [
        "/usr/share/man/man8/rbdsnapd.8.gz",
        "/usr/share/man/man8/rbdsnapctl.8.gz",
        "/usr/share/man/man8/rbdsnapctl-snapshot.8.gz",
        "/usr/share/man/man5/rbdsnapd.toml.5.gz",
    ] {
        assert!(files.contains(page), "{page} not in the package:\n{files}");
    }
    let page = vm.sh("zcat /usr/share/man/man8/rbdsnapd.8.gz");
    assert!(page.contains("check\\-config"), "{page}");
    let help = vm.sh("rbdsnapd --help");
    assert!(help.contains("--check-config"), "{help}");
    let config_page = vm.sh("zcat /usr/share/man/man5/rbdsnapd.toml.5.gz");
    assert!(
        config_page.contains("ceph.client_id")
            && config_page.contains("snapshot.freeze_deadline_secs"),
        "{config_page}"
    );
}

#[test]
fn remove_keeps_the_configuration_and_purge_takes_it_all() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    vm.sh(&format!("echo '# kept by the operator' >> {CONFIG}"));
    vm.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y rbdsnapd 2>&1");
    assert_eq!(status_abbrev(&vm), "rc", "removed, configuration left");
    assert!(vm
        .sh(&format!("cat {CONFIG}"))
        .contains("kept by the operator"));
    assert!(!vm.run("test -e /usr/bin/rbdsnapd").status.success());
    for unit in ["rbdsnapd.socket", "rbdsnapd.service"] {
        assert_eq!(vm.prop(unit, "ActiveState"), "inactive", "{unit}");
        // deb-systemd-helper masks what a removed package leaves configured
        assert_eq!(vm.prop(unit, "LoadState"), "masked", "{unit}");
    }
    // installing again keeps the operator's edit: a conffile
    vm.install();
    assert!(vm
        .sh(&format!("cat {CONFIG}"))
        .contains("kept by the operator"));
    assert_eq!(vm.prop("rbdsnapd.socket", "ActiveState"), "active");
    purge(&vm);
    assert_eq!(status_abbrev(&vm), "", "nothing of the package is known");
    for gone in [
        "/etc/rbdsnapd",
        "/var/lib/rbdsnapd",
        "/run/rbdsnapd",
        "/usr/bin/rbdsnapctl",
    ] {
        assert!(
            !vm.run(&format!("test -e {gone}")).status.success(),
            "{gone} survived the purge"
        );
    }
    // Debian keeps system groups: files may still carry the gid
    assert!(vm.run("getent group rbdsnapd").status.success());
    vm.install();
    assert!(!vm
        .sh(&format!("cat {CONFIG}"))
        .contains("kept by the operator"));
}

#[test]
fn lintian_finds_no_error_and_only_the_accepted_warnings() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    let out = std::process::Command::new("lintian")
        .args(["--tag-display-limit", "0"])
        .arg(&vm.deb_host)
        .output()
        .expect("run lintian");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("lintian:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    for line in text.lines().filter(|l| l.starts_with("W: ")) {
        let tag = line.split_whitespace().nth(2).unwrap_or_default();
        assert!(
            ACCEPTED_WARNINGS.iter().any(|(t, _)| *t == tag),
            "a lintian warning nobody accepted: {line}"
        );
    }
}

#[test]
fn the_installed_service_rates_2_0_or_better_with_systemd_analyze_security() {
    let _one = Vm::lock();
    let Some(vm) = vm() else { return };
    vm.ready();
    let out = vm.sh("systemd-analyze security --no-pager rbdsnapd.service");
    let overall = out
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in:\n{out}"));
    let rating: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("unreadable rating: {overall}"));
    eprintln!("{overall}");
    assert!(rating <= 2.0, "{overall}");
}
