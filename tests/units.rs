//! The systemd units (systemd/), the example configuration (dist/) and the
//! Debian packaging metadata (Cargo.toml) checked against systemd's parser,
//! the daemon's real configuration parser, and each other.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rbdsnapd::config::{self, Config};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `Key=value` settings of a unit file, in order, without comments. The
/// units use no line continuations (checked), so one line is one setting.
fn settings(rel: &str) -> Vec<(String, String)> {
    let text = read(rel);
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter(|l| !l.starts_with('['))
        .map(|l| {
            assert!(!l.ends_with('\\'), "{rel}: continuation line: {l}");
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{rel}: not Key=value: {l}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The one value of `key` in a unit file.
fn setting(rel: &str, key: &str) -> String {
    let all: Vec<String> = settings(rel)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(all.len(), 1, "{rel}: {key}= set {} times", all.len());
    all.into_iter().next().unwrap_or_default()
}

/// A systemd time span as the units write it: "90", "90s", "2min", "5min".
fn span(value: &str) -> Duration {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let n: u64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("time span {value:?}"));
    match &value[digits.len()..] {
        "" | "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(60 * n),
        unit => panic!("time span {value:?}: unit {unit:?} not handled here"),
    }
}

#[test]
fn units_pass_systemd_analyze_verify_and_security_review() {
    let out = Command::new(repo().join("dev/check-units"))
        .arg(env!("CARGO_BIN_EXE_rbdsnapd"))
        .output()
        .expect("run dev/check-units");
    assert!(
        out.status.success(),
        "dev/check-units failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn units_agree_with_the_daemon_defaults_and_each_other() {
    let defaults = Config::default();
    let (service, socket) = ("systemd/rbdsnapd.service", "systemd/rbdsnapd.socket");

    // The daemon started by the unit reads the file the package installs.
    let exec = setting(service, "ExecStart");
    assert_eq!(
        exec,
        format!("/usr/bin/rbdsnapd --config {}", config::DEFAULT_PATH)
    );
    assert_eq!(setting(service, "Type"), "notify");

    // Socket-activated or not, clients find the socket at the same place.
    let listen = PathBuf::from(setting(socket, "ListenStream"));
    assert_eq!(
        listen, defaults.socket,
        "ListenStream= vs the default socket"
    );
    // It lives in the service's RuntimeDirectory, which must then survive a
    // stop of the service, or the socket unit's file would be deleted.
    let runtime = Path::new("/run").join(setting(service, "RuntimeDirectory"));
    assert_eq!(listen.parent(), Some(runtime.as_path()));
    assert_eq!(setting(service, "RuntimeDirectoryPreserve"), "yes");
    assert_eq!(setting(socket, "SocketMode"), defaults.socket_mode);

    // The state directory systemd creates (and leaves writable) is the
    // daemon's default one.
    let state = Path::new("/var/lib").join(setting(service, "StateDirectory"));
    assert_eq!(state, defaults.state_dir);

    // systemd must not SIGKILL the daemon while it is still within its
    // graceful shutdown (finishing jobs, thawing guests).
    let stop = span(&setting(service, "TimeoutStopSec"));
    let grace = Duration::from_secs_f64(defaults.shutdown_grace_secs);
    assert!(
        stop >= grace + Duration::from_secs(60),
        "TimeoutStopSec {stop:?} leaves too little beyond shutdown_grace_secs {grace:?}"
    );
    // The watchdog pings come from the event loop at half the interval.
    assert!(span(&setting(service, "WatchdogSec")) >= Duration::from_secs(10));

    // `systemctl enable rbdsnapd.service` also enables the socket.
    assert_eq!(setting(service, "Also"), "rbdsnapd.socket");

    // The socket's group is the one the package creates.
    let group = setting(socket, "SocketGroup");
    let sysusers = read("systemd/rbdsnapd.sysusers");
    let created: Vec<&str> = sysusers
        .lines()
        .filter(|l| l.starts_with("g "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(created, [group.as_str()], "sysusers groups vs SocketGroup=");
}

#[test]
fn example_config_parses_with_the_real_parser() {
    let path = repo().join("dist/rbdsnapd.toml");
    let cfg = Config::load(&path, true).unwrap_or_else(|e| panic!("{e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}"));
}

/// The example's `#key = value` lines (a key commented out with no space
/// after `#`) uncommented, and the keys it names: `section.key` for the
/// uncommented ones, and those only mentioned in prose (`key = ...` inside
/// a comment, for keys that have no default value to show).
fn uncomment_example(text: &str) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let (mut toml, mut set, mut prose) = (String::new(), BTreeSet::new(), BTreeSet::new());
    let mut section = String::new();
    let key_at = |s: &str| -> Option<String> {
        let (key, _) = s.split_once(" = ")?;
        (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .then(|| key.to_string())
    };
    let path = |section: &str, key: &str| {
        if section.is_empty() {
            key.to_string()
        } else {
            format!("{section}.{key}")
        }
    };
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            toml.push_str(line);
        } else if let Some(key) = line.strip_prefix('#').and_then(key_at) {
            set.insert(path(&section, &key));
            toml.push_str(&line[1..]);
        } else if let Some(comment) = line.strip_prefix('#') {
            // prose: every `key = ` mentioned in it
            for (i, _) in comment.match_indices(" = ") {
                let start = comment[..i]
                    .rfind(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .map_or(0, |p| p + 1);
                if let Some(key) = key_at(&comment[start..]) {
                    prose.insert(path(&section, &key));
                }
            }
        } else {
            toml.push_str(line);
        }
        toml.push('\n');
    }
    (toml, set, prose)
}

/// Every field of `Config` as `section.key`, with whether its default is
/// `None`, read from the pretty `Debug` output of the defaults (nested
/// tables are indented one level deeper).
fn config_fields() -> Vec<(String, bool)> {
    let debug = format!("{:#?}", Config::default());
    let mut fields = Vec::new();
    let mut section = String::new();
    for line in debug.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some((name, value)) = line.trim().split_once(": ") else {
            continue;
        };
        match indent {
            4 if value.ends_with('{') => section = name.to_string(),
            4 => {
                section.clear();
                fields.push((name.to_string(), value == "None,"));
            }
            8 => fields.push((format!("{section}.{name}"), value == "None,")),
            _ => {}
        }
    }
    fields
}

#[test]
fn example_config_lists_every_key_with_its_default() {
    let text = read("dist/rbdsnapd.toml");
    let (uncommented, set, prose) = uncomment_example(&text);

    let fields = config_fields();
    assert!(fields.len() >= 20, "Debug parsing found only {fields:?}");
    for (field, is_none) in &fields {
        if *is_none {
            assert!(
                prose.contains(field),
                "{field} (no default) is not described in dist/rbdsnapd.toml"
            );
        } else {
            assert!(
                set.contains(field),
                "{field} is missing from dist/rbdsnapd.toml as `#{} = <default>`",
                field.rsplit('.').next().unwrap_or(field)
            );
        }
    }

    // The values shown are the real defaults, and the keys real keys (the
    // parser refuses unknown ones).
    let cfg: Config = toml::from_str(&uncommented)
        .unwrap_or_else(|e| panic!("uncommented example:\n{uncommented}\n{e}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        format!("{cfg:#?}"),
        format!("{:#?}", Config::default()),
        "a value in dist/rbdsnapd.toml is not the default"
    );
}

#[test]
fn debian_package_installs_what_the_units_name() {
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets: Vec<(String, String)> = deb["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("asset as [source, dest, mode]");
            (
                a[0].as_str().unwrap_or_default().to_string(),
                a[1].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let has = |src: &str, dest: &str| assets.iter().any(|(s, d)| s == src && d == dest);
    assert!(has("target/release/rbdsnapd", "usr/bin/"), "{assets:?}");
    assert!(has("target/release/rbdsnapctl", "usr/bin/"), "{assets:?}");
    assert!(
        has(
            "dist/rbdsnapd.toml",
            config::DEFAULT_PATH.trim_start_matches('/')
        ),
        "the example configuration must be installed at {}: {assets:?}",
        config::DEFAULT_PATH
    );
    // cargo-deb takes the units and the sysusers file from here.
    assert_eq!(
        deb["systemd-units"]["unit-scripts"].as_str(),
        Some("systemd/")
    );
    for f in ["rbdsnapd.service", "rbdsnapd.socket", "rbdsnapd.sysusers"] {
        assert!(repo().join("systemd").join(f).is_file(), "systemd/{f}");
    }
}

#[test]
fn the_debian_changelog_s_top_entry_is_this_version() {
    let changelog = std::fs::read_to_string(repo().join("dist/changelog")).expect("dist/changelog");
    let top = changelog.lines().next().unwrap_or_default();
    let expected = format!("rbdsnapd ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        top.starts_with(&expected),
        "dist/changelog starts with {top:?}, not {expected:?}: add an entry for the new version"
    );
}

#[test]
fn example_config_s_policy_rules_parse() {
    let text = read("dist/rbdsnapd.toml");
    let (_, example) = text
        .split_once("# --- Per-caller rule example")
        .expect("the example config shows [[policy]] rules");
    let rules: String = example
        .lines()
        .filter_map(|l| l.strip_prefix("#     "))
        .map(|l| format!("{l}\n"))
        .collect();
    let cfg: Config = toml::from_str(&rules).unwrap_or_else(|e| panic!("{rules}\n{e}"));
    assert_eq!(cfg.policy.len(), 2, "{rules}");
    assert!(cfg.policy[0].delete, "{rules}");
}
