//! The journal on a real file: durability of appends, torn tails, damage,
//! compaction, the lock.

use super::*;

fn step(job: &str) -> Record {
    Record::Step {
        job_id: job.into(),
        step: Step::Freeze,
    }
}

fn end(job: &str) -> Record {
    Record::End {
        job_id: job.into(),
        request_id: None,
        params: serde_json::Value::Null,
        domain: "vm".into(),
        image: "img".into(),
        at: 0.0,
        outcome: Outcome::Ok(serde_json::Value::Null),
        started: None,
        phase: None,
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rbdsnapd-journal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn records_survive_a_reopen_in_order() {
    let dir = tempdir("reopen");
    {
        let (journal, old) = Journal::open(&dir).expect("open");
        assert!(old.is_empty());
        journal.append(&step("a")).expect("append");
        journal.append(&step("b")).expect("append");
    }
    let (_journal, records) = Journal::open(&dir).expect("reopen");
    let jobs: Vec<&str> = records.iter().map(Record::job_id).collect();
    assert_eq!(jobs, ["a", "b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_torn_last_record_is_dropped_and_appending_goes_on() {
    let dir = tempdir("torn");
    {
        let (journal, _) = Journal::open(&dir).expect("open");
        journal.append(&step("a")).expect("append");
    }
    let line = step("b").to_line().expect("line");
    let mut file = OpenOptions::new()
        .append(true)
        .open(dir.join("journal"))
        .expect("file");
    file.write_all(&line.as_bytes()[..line.len() / 2])
        .expect("torn write");
    drop(file);
    {
        let (journal, records) = Journal::open(&dir).expect("reopen");
        assert_eq!(records.len(), 1);
        journal.append(&step("c")).expect("append after torn");
    }
    let (_journal, records) = Journal::open(&dir).expect("reopen");
    let jobs: Vec<&str> = records.iter().map(Record::job_id).collect();
    assert_eq!(jobs, ["a", "c"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damage_before_the_end_stops_the_start() {
    let dir = tempdir("corrupt");
    std::fs::create_dir_all(&dir).expect("dir");
    let good = step("a").to_line().expect("line");
    std::fs::write(
        dir.join("journal"),
        format!("{good}00000000 garbage\n{good}"),
    )
    .expect("write");
    let err = Journal::open(&dir).expect_err("corrupt");
    assert!(
        matches!(err, JournalError::Corrupt { line: 2, .. }),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compaction_keeps_what_it_is_given_and_appends_continue() {
    let dir = tempdir("compact");
    {
        let (journal, _) = Journal::open(&dir).expect("open");
        for job in ["a", "b", "c"] {
            journal.append(&step(job)).expect("append");
        }
        journal.append(&end("a")).expect("end a");
        journal.append(&end("c")).expect("end c");
        journal.compact().expect("compact");
        journal.append(&step("d")).expect("append");
    }
    let (_journal, records) = Journal::open(&dir).expect("reopen");
    let kinds: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r.job_id(),
                if matches!(r, Record::End { .. }) {
                    "end"
                } else {
                    "step"
                }
            )
        })
        .collect();
    // ended jobs keep only their end record; the live job b keeps its steps
    assert_eq!(kinds, ["a:end", "c:end", "b:step", "d:step"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_daemon_per_state_directory() {
    let dir = tempdir("lock");
    let (_first, _) = Journal::open(&dir).expect("open");
    assert!(matches!(Journal::open(&dir), Err(JournalError::Locked(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn after_compaction_appends_reach_the_file_that_has_the_name() {
    let dir = tempdir("compact-append");
    {
        let (journal, _) = Journal::open(&dir).expect("open");
        journal.append(&step("a")).expect("append");
        journal.compact().expect("compact");
        journal.append(&step("b")).expect("append after compaction");
        assert!(!dir.join("journal.tmp").exists());
    }
    let (_journal, records) = Journal::open(&dir).expect("reopen");
    let jobs: Vec<&str> = records.iter().map(Record::job_id).collect();
    assert_eq!(jobs, ["a", "b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn guard(job: &str, domain: &str) -> Record {
    Record::Guard {
        job_id: job.into(),
        domain_uuid: domain.into(),
        since: 1,
        reason: "late freeze".into(),
        thaw: true,
        resume: false,
    }
}

#[test]
fn thaw_guards_outlive_their_job_and_compaction_until_cleared() {
    let dir = tempdir("guards");
    {
        let (journal, _) = Journal::open(&dir).expect("open");
        journal.append(&step("a")).expect("append");
        journal.append(&guard("a", "dom-1")).expect("guard");
        journal.append(&guard("b", "dom-2")).expect("guard");
        journal.append(&end("a")).expect("end");
        journal
            .append(&Record::Unguard {
                job_id: "b".into(),
                domain_uuid: "dom-2".into(),
            })
            .expect("unguard");
        journal.compact().expect("compact");
    }
    let (_journal, records) = Journal::open(&dir).expect("reopen");
    let active = crate::recovery::guards(&records);
    let domains: Vec<&str> = active.iter().map(|g| g.domain_uuid.as_str()).collect();
    assert_eq!(domains, ["dom-1"], "{records:?}");
    assert_eq!(active[0].job_id, "a");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_write_is_cut_back_so_the_next_start_reads_the_journal() {
    let dir = tempdir("short-write");
    {
        let (journal, _) = Journal::open(&dir).expect("open");
        journal.append(&step("a")).expect("append");
        journal
            .fail_next_write
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = journal.append(&step("lost")).expect_err("disk full");
        assert!(err.to_string().contains("No space left"), "{err}");
        journal.append(&step("b")).expect("appending goes on");
    }
    let (_journal, records) = Journal::open(&dir).expect("no fragment refuses the start");
    let jobs: Vec<&str> = records.iter().map(Record::job_id).collect();
    assert_eq!(jobs, ["a", "b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_end_written_before_timelines_were_kept_still_reads() {
    let old = r#"{"kind":"end","job_id":"j","request_id":null,"params":null,"domain":"vm","image":"img","at":5.0,"outcome":{"ok":null}}"#;
    let line = format!("{:08x} {old}", crc32(old.as_bytes()));
    let record = Record::from_line(line.as_bytes()).expect("an old end record");
    assert!(matches!(
        record,
        Record::End {
            started: None,
            phase: None,
            ..
        }
    ));
    let mut new = end("j");
    if let Record::End { started, phase, .. } = &mut new {
        (*started, *phase) = (Some(1.0), Some(crate::snapshot::Phase::Flatten));
    }
    let line = new.to_line().expect("line");
    assert_eq!(Record::from_line(line.trim_end().as_bytes()), Some(new));
}

#[test]
fn a_guard_written_before_pauses_existed_still_thaws() {
    let old = r#"{"kind":"guard","job_id":"j","domain_uuid":"d","since":1,"reason":"late"}"#;
    let record: Record = serde_json::from_str(old).expect("an old guard record reads");
    assert!(matches!(
        record,
        Record::Guard {
            thaw: true,
            resume: false,
            ..
        }
    ));
}
