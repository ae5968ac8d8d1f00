//! The job registry's domain exclusion (one holder per domain, whatever
//! ends when) and its bounded waiting lines.

use serde_json::json;

use super::*;

fn new_job(job_id: &str, domain_uuid: &str) -> NewJob {
    NewJob {
        job_id: job_id.into(),
        domain: "vm".into(),
        domain_uuid: domain_uuid.into(),
        domain_name: "vm".into(),
        image: format!("img-{job_id}"),
        request_id: None,
        params: json!({"image": format!("img-{job_id}")}),
        caller_uid: Some(1000),
    }
}

const LIMITS: WaitLimits = WaitLimits {
    per_domain: 2,
    per_caller: 3,
};

fn busy(jobs: &Jobs, job_id: &str, domain: &str) -> bool {
    matches!(jobs.start(new_job(job_id, domain)), Err(e) if e.kind() == ErrorKind::Busy)
}

#[test]
fn a_background_jobs_end_does_not_free_its_successors_domain() {
    let jobs = Jobs::default();
    assert!(jobs.start(new_job("a", "d")).is_ok());
    // A answers (its flatten goes on): the domain is free for B
    jobs.answer("a", json!({"job_id": "a"}));
    assert!(jobs.start(new_job("b", "d")).is_ok());
    // A's flatten ends while B runs: B still holds the domain
    jobs.finish("a", &Ok(json!({"job_id": "a"})));
    assert!(busy(&jobs, "c", "d"), "C ran beside B on the same domain");
    jobs.finish("b", &Ok(json!({})));
    assert!(jobs.start(new_job("c2", "d")).is_ok());
}

#[test]
fn a_refused_or_queued_job_never_releases_the_holders_domain() {
    let jobs = Jobs::default();
    assert!(jobs.start(new_job("a", "d")).is_ok());
    let _cancel = jobs.enqueue(new_job("q", "d"), LIMITS).expect("room");
    assert!(
        jobs.start_queued("q").is_err(),
        "the queued job ran beside A"
    );
    // the queued job gives up: A keeps the domain
    jobs.finish("q", &Err(RpcError::new(ErrorKind::Cancelled, "gave up")));
    assert!(busy(&jobs, "c", "d"));
    jobs.finish("a", &Ok(json!({})));
    assert!(jobs.start(new_job("c", "d")).is_ok());
}

#[test]
fn other_domains_are_independent() {
    let jobs = Jobs::default();
    assert!(jobs.start(new_job("a", "d1")).is_ok());
    assert!(jobs.start(new_job("b", "d2")).is_ok());
    jobs.finish("a", &Ok(json!({})));
    assert!(busy(&jobs, "c", "d2"));
}

#[test]
fn waiting_lines_are_bounded_per_domain_and_per_caller() {
    let jobs = Jobs::default();
    for domain in ["d1", "d2"] {
        assert!(jobs
            .start(new_job(&format!("hold-{domain}"), domain))
            .is_ok());
    }
    assert!(jobs.enqueue(new_job("q1", "d1"), LIMITS).is_ok());
    assert!(jobs.enqueue(new_job("q2", "d1"), LIMITS).is_ok());
    let full = jobs
        .enqueue(new_job("q3", "d1"), LIMITS)
        .expect_err("domain full");
    assert_eq!(full.kind(), ErrorKind::Busy);
    assert!(full.message.contains("max_waiting_per_domain"), "{full:?}");
    assert!(jobs.get("q3").is_none(), "a refused request is not listed");
    // the caller's third waits for another domain; its fourth is refused
    assert!(jobs.enqueue(new_job("q4", "d2"), LIMITS).is_ok());
    let full = jobs
        .enqueue(new_job("q5", "d2"), LIMITS)
        .expect_err("caller full");
    assert!(full.message.contains("max_waiting_per_caller"), "{full:?}");
    // another caller still gets a place
    let other = NewJob {
        caller_uid: Some(1001),
        ..new_job("q6", "d2")
    };
    assert!(jobs.enqueue(other, LIMITS).is_ok());
    // a place frees when a waiting request ends
    jobs.finish("q1", &Err(RpcError::new(ErrorKind::Cancelled, "gave up")));
    assert!(jobs.enqueue(new_job("q7", "d1"), LIMITS).is_ok());
}
