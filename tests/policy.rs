//! Per-caller rules (`[[policy]]`) on the bed: callers run as other users
//! (a child process with their uid and groups, so the daemon reads their
//! credentials from the socket) and are held to the domains, pools and
//! deletes their rules allow; what Ceph holds is checked after each refusal.
//! Root, named by no rule, keeps everything.

mod common;

use common::daemon::{self, ImageCleanup, Response};
use serde_json::{json, Value};

const ALLOWED_DOMAIN: &str = "rbdsnapd-test-15";
const ALLOWED_SOURCE: &str = "vms/testdrv-15-vda";
const OTHER_DOMAIN: &str = "rbdsnapd-test-08";
const OTHER_SOURCE: &str = "vms/testdrv-08-vda";

/// nobody: may snapshot `rbdsnapd-test-1?` into `images`, may not delete.
const SNAPSHOTTER: u32 = 65534;
/// A uid whose only link to a rule is the supplementary group below.
const DELETER: u32 = 65533;
const DELETERS_GROUP: u32 = 65532;
/// Allowed to connect, named by no rule: reads only.
const STRANGER: u32 = 65531;

const POLICY: &str = r#"
socket_mode = "0666"
allowed_users = ["65531"]

[[policy]]
users = ["65534"]
domains = ["rbdsnapd-test-1?"]
pools = ["images"]

[[policy]]
groups = ["65532"]
pools = ["images"]
delete = true
"#;

fn line(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

/// `method` as `uid` (primary group the same number) in `groups`.
fn call_as(
    d: &daemon::DaemonProc,
    uid: u32,
    groups: &[u32],
    method: &str,
    params: Value,
) -> Response {
    let got = daemon::call_as_member(uid, uid, groups, &d.socket, &line(method, params));
    let answer = got
        .messages
        .into_iter()
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
        .unwrap_or_else(|| panic!("no answer to {method} as uid {uid}"));
    Response(answer)
}

fn message(r: &Response) -> String {
    r.error()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn callers_are_held_to_their_rules_and_root_is_not() {
    let Some(bed) = daemon::bed() else { return };
    let ceph = &bed.ceph;
    let d = bed.start(POLICY);
    let image = common::unique("policy");
    let _cleanup = ImageCleanup::new(ceph, "images", &image);
    let _in_vms = ImageCleanup::new(ceph, "vms", &image);
    let create = |domain: &str, pool: Option<&str>| {
        let mut params = json!({"domain": domain, "image": image, "flatten": "none"});
        if let Some(pool) = pool {
            params["pool"] = json!(pool);
        }
        params
    };

    // a domain its patterns do not match: refused before anything
    let refused = call_as(
        &d,
        SNAPSHOTTER,
        &[],
        "snapshot.create",
        create(OTHER_DOMAIN, None),
    );
    refused.assert_error(-32002, "permission_denied", "domain outside the rule");
    let why = message(&refused);
    assert!(
        why.contains("uid 65534") && why.contains("rbdsnapd-test-1?"),
        "{why}"
    );
    assert!(!ceph.exists(&format!("images/{image}")));
    assert_eq!(ceph.temp_snapshots(OTHER_SOURCE), Vec::<String>::new());

    // an allowed domain into a pool the rule does not list: refused in
    // pre-flight, nothing frozen or made
    let refused = call_as(
        &d,
        SNAPSHOTTER,
        &[],
        "snapshot.create",
        create(ALLOWED_DOMAIN, Some("vms")),
    );
    refused.assert_error(-32002, "permission_denied", "pool outside the rule");
    assert!(message(&refused).contains("pool vms"), "{refused:?}");
    assert!(!ceph.exists(&format!("vms/{image}")));
    assert_eq!(ceph.temp_snapshots(ALLOWED_SOURCE), Vec::<String>::new());

    // within its rule: made
    let made = call_as(
        &d,
        SNAPSHOTTER,
        &[],
        "snapshot.create",
        create(ALLOWED_DOMAIN, None),
    );
    assert!(made.is_ok(), "{made:?}");
    let location = made.result()["disks"][0]["location"].clone();
    assert_eq!(made.result()["disks"][0]["pool"], "images", "{made:?}");
    assert!(ceph.exists(&format!("images/{image}")));

    // it may not delete (no rule with delete = true)
    let delete = json!({"location": location});
    let refused = call_as(&d, SNAPSHOTTER, &[], "snapshot.delete", delete.clone());
    refused.assert_error(-32002, "permission_denied", "delete without a rule");
    assert!(
        ceph.exists(&format!("images/{image}")),
        "refused delete removed the image"
    );

    // a stranger (allowed to connect, no rule) reads, and nothing more
    let status = call_as(&d, STRANGER, &[], "daemon.status", json!({}));
    assert!(status.is_ok(), "{status:?}");
    let refused = call_as(
        &d,
        STRANGER,
        &[],
        "snapshot.create",
        create(ALLOWED_DOMAIN, None),
    );
    refused.assert_error(-32002, "permission_denied", "stranger's create");
    assert!(message(&refused).contains("may only read"), "{refused:?}");
    let refused = call_as(
        &d,
        STRANGER,
        &[],
        "domain.disks",
        json!({"domain": ALLOWED_DOMAIN}),
    );
    refused.assert_error(-32002, "permission_denied", "stranger's domain.disks");
    call_as(&d, STRANGER, &[], "snapshot.delete", delete.clone()).assert_error(
        -32002,
        "permission_denied",
        "stranger's delete",
    );

    // root (named by no rule) keeps everything: a job on the other domain…
    let mut root = d.connect();
    let other = common::unique("policy-root");
    let _other_cleanup = ImageCleanup::new(ceph, "images", &other);
    let job = root
        .call(
            "snapshot.create",
            json!({"domain": OTHER_DOMAIN, "image": other, "flatten": "none"}),
        )
        .result()
        .clone();
    // … which the snapshotter may not cancel (its domain is not its rules')
    let refused = call_as(
        &d,
        SNAPSHOTTER,
        &[],
        "jobs.cancel",
        json!({"job_id": job["job_id"]}),
    );
    refused.assert_error(
        -32002,
        "permission_denied",
        "cancel of another domain's job",
    );

    // the deleter's rule comes through a supplementary group only
    let disks = call_as(
        &d,
        DELETER,
        &[DELETERS_GROUP],
        "domain.disks",
        json!({"domain": ALLOWED_DOMAIN}),
    );
    assert!(disks.is_ok(), "{disks:?}");
    let deleted = call_as(&d, DELETER, &[DELETERS_GROUP], "snapshot.delete", delete);
    assert!(deleted.is_ok(), "{deleted:?}");
    assert_eq!(deleted.result()["deleted"], true, "{deleted:?}");
    assert!(
        !ceph.exists(&format!("images/{image}")),
        "deleted, yet in Ceph"
    );
    // without the group, the same uid is a stranger (and not even allowed in)
    let cut = call_as(&d, DELETER, &[], "daemon.status", json!({}));
    cut.assert_error(-32002, "permission_denied", "deleter without its group");

    // a retry of root's request (same request_id and params) into a pool
    // the snapshotter may not write to does not hand it root's result
    let rooted = common::unique("policy-rid");
    let _rooted_cleanup = ImageCleanup::new(ceph, "vms", &rooted);
    let params = json!({"domain": ALLOWED_DOMAIN, "image": rooted, "pool": "vms",
                        "flatten": "none", "request_id": rooted});
    let first = root.call("snapshot.create", params.clone());
    assert!(first.is_ok(), "{first:?}");
    let retry = call_as(&d, SNAPSHOTTER, &[], "snapshot.create", params);
    retry.assert_error(-32002, "permission_denied", "retry into another pool");
    assert!(message(&retry).contains("pool vms"), "{retry:?}");
    drop(root);
}

#[test]
fn a_malformed_rule_stops_the_start() {
    let Some(bed) = daemon::bed() else { return };
    for (rule, says) in [
        (
            "[[policy]]\npools = [\"images\"]\n",
            "names no users and no groups",
        ),
        (
            "[[policy]]\nusers = [\"0\"]\npool = [\"images\"]\n",
            "unknown field `pool`",
        ),
    ] {
        let mut d = bed.launch().extra(rule).no_wait().start();
        let status = d
            .wait_exit(std::time::Duration::from_secs(20))
            .unwrap_or_else(|| d.fail("still running with a bad rule"));
        assert_eq!(status.code(), Some(78), "{rule}: {}", d.log());
        assert!(d.log().contains(says), "{rule}: {}", d.log());
    }
}

/// A user the configuration names that does not exist yet (the name service
/// not up at boot): the daemon starts all the same (its thaw guards must
/// run), serves only root meanwhile, and admits the user once it resolves.
#[test]
fn a_name_that_does_not_resolve_yet_serves_root_only_until_it_does() {
    let Some(bed) = daemon::bed() else { return };
    const LATE: &str = "rbdsnapd-late-user";
    const LATE_UID: u32 = 4731;
    let _ = std::process::Command::new("userdel").arg(LATE).status();
    let extra = format!(
        "socket_mode = \"0666\"\nallowed_users = [\"{LATE}\"]\n[[policy]]\nusers = [\"{LATE}\"]\npools = [\"images\"]\n"
    );
    let d = bed.start(&extra);
    let root = d.connect().call("daemon.status", json!({}));
    assert!(root.is_ok(), "root is served: {root:?}");
    let refused = call_as(&d, LATE_UID, &[], "daemon.status", json!({}));
    refused.assert_error(-32002, "permission_denied", "while the name is missing");
    assert!(
        message(&refused).contains("do not resolve yet"),
        "{refused:?}"
    );
    assert!(message(&refused).contains(LATE), "{refused:?}");
    assert!(d.log().contains("do not resolve"), "{}", d.log());
    let made = std::process::Command::new("useradd")
        .args(["--no-create-home", "--uid", &LATE_UID.to_string(), LATE])
        .status()
        .expect("useradd");
    assert!(made.success(), "useradd {LATE}");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(25);
    let admitted = loop {
        let answer = call_as(&d, LATE_UID, &[], "daemon.status", json!({}));
        if answer.is_ok() || std::time::Instant::now() > until {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let _ = std::process::Command::new("userdel").arg(LATE).status();
    assert!(
        admitted.is_ok(),
        "admitted once the name resolved: {admitted:?}"
    );
    assert!(d.log().contains("resolves now"), "{}", d.log());
}
