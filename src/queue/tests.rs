//! Queue semantics against a real SQLite file: exclusive claims, FIFO per session, fencing.

use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::db::{migrate, organizations};
use crate::ids::{OrgId, SessionId};
use crate::orgs::new_org;

async fn setup() -> (tempfile::TempDir, Arc<Queue>, OrgId) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let db = Db::open(&path, 4).unwrap();
    migrate::migrate_to(&rusqlite::Connection::open(&path).unwrap(), None).unwrap();
    let org = new_org("acme", None);
    let id = org.id.clone();
    db.write(move |c| organizations::insert_organization(c, &org)).await.unwrap();
    (dir, Arc::new(Queue::new(db, Duration::from_secs(60))), id)
}

fn new_run(org: &OrgId, runner: &str, session: Option<SessionId>) -> NewRun {
    NewRun {
        id: RunId::new(),
        org: org.clone(),
        user: None,
        session,
        on_busy: OnBusy::Enqueue,
        stamp: {
            let runner = runner.to_owned();
            Box::new(move |_| Stamp { profile: json!({"runner": runner}), runner })
        },
        input: json!({"model": "echo", "messages": []}).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
async fn concurrent_claimers_never_claim_the_same_run() {
    let (_dir, queue, org) = setup().await;
    for _ in 0..200 {
        queue.dispatch(new_run(&org, "ts", None)).await.unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut handles = Vec::new();
    for w in 0..8 {
        let (queue, barrier) = (Arc::clone(&queue), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            while let Some(c) = queue.claim("ts", &format!("w{w}")).await.unwrap() {
                assert_eq!(c.run.claimed_by.as_deref(), Some(format!("w{w}").as_str()));
                mine.push(c.run.id);
            }
            mine
        }));
    }
    let mut seen = HashSet::new();
    for handle in handles {
        for id in handle.await.unwrap() {
            assert!(seen.insert(id), "a run was claimed twice");
        }
    }
    assert_eq!(seen.len(), 200);
}

#[tokio::test]
async fn runs_of_a_runner_without_workers_stay_queued() {
    let (_dir, queue, org) = setup().await;
    let run = queue.dispatch(new_run(&org, "go", None)).await.unwrap().run;
    assert!(queue.claim("ts", "w").await.unwrap().is_none());
    let claimed = queue.claim("go", "w").await.unwrap().unwrap();
    assert_eq!(claimed.run.id, run.id);
}

#[tokio::test]
async fn one_session_runs_first_in_first_out_and_reject_refuses() {
    let (_dir, queue, org) = setup().await;
    let first = queue.dispatch(new_run(&org, "ts", None)).await.unwrap().run;
    let second = queue.dispatch(new_run(&org, "ts", Some(first.session_id.clone()))).await.unwrap().run;
    // A flag flip put the third turn on another runner: it still waits its turn.
    let third = queue.dispatch(new_run(&org, "go", Some(first.session_id.clone()))).await.unwrap().run;
    let mut reject = new_run(&org, "ts", Some(first.session_id.clone()));
    reject.on_busy = OnBusy::Reject;
    assert!(matches!(queue.dispatch(reject).await, Err(DispatchError::Busy(_))));

    let claimed = queue.claim("ts", "w").await.unwrap().unwrap();
    assert_eq!(claimed.run.id, first.id);
    assert!(queue.claim("ts", "w2").await.unwrap().is_none(), "second must wait for the first");
    assert!(queue.claim("go", "w3").await.unwrap().is_none(), "third must wait too");
    assert!(queue.start(&claimed, "w").await.unwrap());
    let done = Completion {
        status: RunStatus::Completed,
        output: Some(json!({"content": "ok"})),
        usage: None,
        error: None,
        messages: vec![Message::text(crate::domain::message::Role::User, "hi")],
        upstream_ms: 0.0,
        tail: Vec::new(),
    };
    let terminal = queue.finish(&claimed.run, "w", claimed.next_seq + 1, done.clone()).await.unwrap();
    assert_eq!(terminal.map(|e| (e.kind, e.seq)), Some((EventType::Completed, claimed.next_seq + 1)));
    // Idempotent and fenced: finishing again, or by another worker, changes nothing.
    assert!(queue.finish(&claimed.run, "w", claimed.next_seq + 2, done).await.unwrap().is_none());
    assert!(queue.claim("go", "w3").await.unwrap().is_none(), "third still behind second");
    let next = queue.claim("ts", "w2").await.unwrap().unwrap();
    assert_eq!(next.run.id, second.id);
    assert_eq!(next.history.len(), 1, "the first turn's messages are the second's history");
    let _ = third;
}

#[tokio::test]
async fn a_worker_that_comes_back_gives_back_what_it_held() {
    let (_dir, queue, org) = setup().await;
    let run = queue.dispatch(new_run(&org, "ts", None)).await.unwrap().run;
    let claimed = queue.claim("ts", "w").await.unwrap().unwrap();
    let requeued = queue.db.write(|c| runs::requeue_worker_runs(c, "w", now_ms())).await.unwrap();
    assert_eq!(requeued, vec![(run.id.clone(), 2)]);
    // The stale holder can no longer start or finish the run.
    assert!(!queue.start(&claimed, "w").await.unwrap());
    let again = queue.claim("ts", "w").await.unwrap().unwrap();
    assert_eq!(again.run.attempt, 2);
    assert_eq!(again.run.runner, "ts");
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_with_one_terminal_event() {
    let (_dir, queue, org) = setup().await;
    let run = queue.dispatch(new_run(&org, "ts", None)).await.unwrap().run;
    queue.cancel(&run).await.unwrap();
    let id = run.id.clone();
    let (row, events) = queue
        .db
        .read(move |c| Ok((runs::find_run(c, &id)?.unwrap(), run_events::list_events_after(c, &id, 0, 100)?)))
        .await
        .unwrap();
    assert_eq!(row.status, RunStatus::Cancelled);
    assert_eq!(events.iter().filter(|e| e.kind.is_terminal()).count(), 1);
    assert!(queue.claim("ts", "w").await.unwrap().is_none());
}

#[tokio::test]
async fn a_local_worker_with_a_free_slot_takes_a_run_in_its_dispatch_transaction() {
    let (_dir, queue, org) = setup().await;
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    queue.set_local(Local { runner: "ts".into(), worker: "w".into(), slots: Arc::clone(&slots) });

    let first = queue.dispatch(new_run(&org, "ts", None)).await.unwrap();
    let (claimed, slot) = first.taken.expect("a free slot takes the run");
    assert_eq!((claimed.run.status, claimed.run.claimed_by.as_deref()), (RunStatus::Running, Some("w")));
    assert_eq!(claimed.next_seq, 3);
    assert_eq!(slots.available_permits(), 0, "the taken run holds the slot");
    let id = claimed.run.id.clone();
    let (row, events) = queue
        .db
        .read(move |c| Ok((runs::find_run(c, &id)?.unwrap(), run_events::list_events_after(c, &id, 0, 100)?)))
        .await
        .unwrap();
    assert_eq!((row.status, row.claimed_by.as_deref(), row.attempt), (RunStatus::Running, Some("w"), 1));
    assert!(row.lease_expires_at.is_some() && row.started_at.is_some());
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::Queued, EventType::Started]);

    // No slot free: queued. Another runner: queued even with a slot.
    let full = queue.dispatch(new_run(&org, "ts", None)).await.unwrap();
    assert!(full.taken.is_none());
    assert_eq!(full.run.status, RunStatus::Queued);
    drop(slot);
    let other = queue.dispatch(new_run(&org, "go", None)).await.unwrap();
    assert!(other.taken.is_none(), "the local worker serves ts only");
    assert_eq!(slots.available_permits(), 1, "a slot not used is given back");
    // A free slot never jumps the queue: an older `ts` run waits, so the new one queues behind it.
    let behind = queue.dispatch(new_run(&org, "ts", None)).await.unwrap();
    assert!(behind.taken.is_none(), "FIFO per runner");
    // Nor jumps the session: the first run's session is busy.
    let (_, _) =
        (queue.claim("ts", "x").await.unwrap().unwrap(), queue.claim("ts", "x").await.unwrap().unwrap());
    let same = queue.dispatch(new_run(&org, "ts", Some(claimed.run.session_id.clone()))).await.unwrap();
    assert!(same.taken.is_none(), "FIFO per session");
    assert_eq!(same.run.status, RunStatus::Queued);
}
