//! Queue semantics against a real SQLite file: exclusive claims, FIFO per session, fencing.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::db::{messages, migrate, now_ms, organizations, run_events, runs, sessions};
use crate::domain::event::EventType;
use crate::domain::outcome::{RunOutput, Usage};
use crate::domain::resolver::ResolverRules;
use crate::domain::run::RunStatus;
use crate::domain::session::SessionStatus;
use crate::ids::{OrgId, SessionId};
use crate::orgs::new_org;

/// Two organizations: `acme` (default runner `ts`) and `gopher` (flagged to `go`).
struct Orgs {
    ts: OrgId,
    go: OrgId,
}

async fn setup() -> (tempfile::TempDir, Arc<Queue>, Orgs) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let db = Db::open(&path, 4).unwrap();
    migrate::migrate_to(&rusqlite::Connection::open(&path).unwrap(), None).unwrap();
    let acme = new_org("acme", None);
    let mut gopher = new_org("gopher", None);
    gopher.features = json!({"runner_default": "go"});
    let orgs = Orgs { ts: acme.id.clone(), go: gopher.id.clone() };
    db.write(move |c| {
        organizations::insert_organization(c, &acme)?;
        organizations::insert_organization(c, &gopher)
    })
    .await
    .unwrap();
    let rules = ResolverRules { runners: vec!["ts".into(), "go".into()], ramp: None, flags_enabled: true };
    let settings = QueueSettings { lease: Duration::from_secs(60), max_attempts: 3 };
    (dir, Arc::new(Queue::new(db, Resolver::new(rules), settings)), orgs)
}

/// A worker id named `name`.
fn wk(name: &str) -> WorkerId {
    format!("wrk_{name}").parse().unwrap()
}

/// Points `org`'s runner flag at `runner`.
async fn flag(queue: &Queue, org: &OrgId, runner: &str) {
    let (org, features) = (org.clone(), json!({"runner_default": runner}));
    queue.db.write(move |c| organizations::update_features(c, &org, &features, now_ms())).await.unwrap();
}

fn new_run(org: &OrgId, session: Option<SessionId>) -> NewRun {
    NewRun {
        id: RunId::new(),
        org: org.clone(),
        user: None,
        session,
        on_busy: OnBusy::Enqueue,
        profile: crate::domain::profile::tests::profile(""),
        input: json!({"model": "echo", "messages": []}).to_string(),
        known_later: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[expect(clippy::disallowed_methods, reason = "the test joins every task it spawns")]
async fn concurrent_claimers_never_claim_the_same_run() {
    let (_dir, queue, orgs) = setup().await;
    for _ in 0..200 {
        queue.dispatch(new_run(&orgs.ts, None)).await.unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut handles = Vec::new();
    for w in 0..8 {
        let (queue, barrier) = (Arc::clone(&queue), Arc::clone(&barrier));
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            while let Some(c) = queue.claim("ts", &wk(&format!("w{w}"))).await.unwrap() {
                assert_eq!(c.run.claimed_by, Some(wk(&format!("w{w}"))));
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
    let (_dir, queue, orgs) = setup().await;
    let run = queue.dispatch(new_run(&orgs.go, None)).await.unwrap().run;
    assert!(queue.claim("ts", &wk("w")).await.unwrap().is_none());
    let claimed = queue.claim("go", &wk("w")).await.unwrap().unwrap();
    assert_eq!(claimed.run.id, run.id);
}

#[tokio::test]
async fn one_session_runs_first_in_first_out_and_reject_refuses() {
    let (_dir, queue, orgs) = setup().await;
    let first = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap().run;
    let second = queue.dispatch(new_run(&orgs.ts, Some(first.session_id.clone()))).await.unwrap().run;
    // A flag flip put the third turn on another runner: it still waits its turn.
    flag(&queue, &orgs.ts, "go").await;
    let third = queue.dispatch(new_run(&orgs.ts, Some(first.session_id.clone()))).await.unwrap().run;
    assert_eq!(third.runner, "go");
    let mut reject = new_run(&orgs.ts, Some(first.session_id.clone()));
    reject.on_busy = OnBusy::Reject;
    assert!(matches!(queue.dispatch(reject).await, Err(DispatchError::Busy(_))));

    let claimed = queue.claim("ts", &wk("w")).await.unwrap().unwrap();
    assert_eq!(claimed.run.id, first.id);
    assert!(queue.claim("ts", &wk("w2")).await.unwrap().is_none(), "second must wait for the first");
    assert!(queue.claim("go", &wk("w3")).await.unwrap().is_none(), "third must wait too");
    assert!(queue.start(&claimed).await.unwrap());
    let done = Completion {
        outcome: RunOutcome::Completed(RunOutput { content: Some("ok".into()), tool_calls: Vec::new() }),
        usage: Usage::default(),
        messages: vec![Message::text(crate::domain::message::Role::User, "hi")],
        upstream_ms: 0.0,
        tail: Vec::new(),
    };
    let terminal = queue.finish(&claimed.run, &wk("w"), claimed.next_seq + 1, done.clone()).await.unwrap();
    assert_eq!(terminal.map(|e| (e.kind(), e.seq)), Some((EventType::Completed, claimed.next_seq + 1)));
    // Idempotent and fenced: finishing again, or by another worker, changes nothing.
    assert!(queue.finish(&claimed.run, &wk("w"), claimed.next_seq + 2, done).await.unwrap().is_none());
    assert!(queue.claim("go", &wk("w3")).await.unwrap().is_none(), "third still behind second");
    let next = queue.claim("ts", &wk("w2")).await.unwrap().unwrap();
    assert_eq!(next.run.id, second.id);
    assert_eq!(next.history.len(), 1, "the first turn's messages are the second's history");
    let _ = third;
}

#[tokio::test]
async fn a_worker_that_comes_back_gives_back_what_it_held() {
    let (_dir, queue, orgs) = setup().await;
    let run = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap().run;
    let claimed = queue.claim("ts", &wk("w")).await.unwrap().unwrap();
    let requeued = queue.db.write(|c| runs::requeue_worker_runs(c, &wk("w"), now_ms())).await.unwrap();
    assert_eq!(requeued, vec![(run.id.clone(), 2)]);
    // The stale holder can no longer start or finish the run.
    assert!(!queue.start(&claimed).await.unwrap());
    let again = queue.claim("ts", &wk("w")).await.unwrap().unwrap();
    assert_eq!(again.run.attempt, 2);
    assert_eq!(again.run.runner, "ts");
}

#[tokio::test]
async fn cancelling_a_queued_run_ends_it_with_one_terminal_event() {
    let (_dir, queue, orgs) = setup().await;
    let run = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap().run;
    queue.cancel(&run).await.unwrap();
    let id = run.id.clone();
    let (row, events) = queue
        .db
        .read(move |c| Ok((runs::find_run(c, &id)?.unwrap(), run_events::list_events_after(c, &id, 0, 100)?)))
        .await
        .unwrap();
    assert_eq!(row.status, RunStatus::Cancelled);
    assert_eq!(events.iter().filter(|e| e.kind().is_terminal()).count(), 1);
    assert!(queue.claim("ts", &wk("w")).await.unwrap().is_none());
}

#[tokio::test]
async fn a_local_worker_with_a_free_slot_takes_a_run_in_its_dispatch_transaction() {
    let (_dir, queue, orgs) = setup().await;
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    queue.set_local(Local { runner: "ts".into(), worker: wk("w"), slots: Arc::clone(&slots) });

    let first = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap();
    let (claimed, slot) = first.taken.expect("a free slot takes the run");
    assert_eq!(
        (claimed.run.status, claimed.run.claimed_by.as_ref().map(WorkerId::as_str)),
        (RunStatus::Running, Some("wrk_w"))
    );
    assert_eq!(claimed.next_seq, 3);
    assert_eq!(slots.available_permits(), 0, "the taken run holds the slot");
    let id = claimed.run.id.clone();
    let (row, events) = queue
        .db
        .read(move |c| Ok((runs::find_run(c, &id)?.unwrap(), run_events::list_events_after(c, &id, 0, 100)?)))
        .await
        .unwrap();
    assert_eq!(
        (row.status, row.claimed_by.as_ref().map(WorkerId::as_str), row.attempt),
        (RunStatus::Running, Some("wrk_w"), 1)
    );
    assert!(row.lease_expires_at.is_some() && row.started_at.is_some());
    let kinds: Vec<_> = events.iter().map(RunEvent::kind).collect();
    assert_eq!(kinds, [EventType::Queued, EventType::Started]);

    // No slot free: queued. Another runner: queued even with a slot.
    let full = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap();
    assert!(full.taken.is_none());
    assert_eq!(full.run.status, RunStatus::Queued);
    drop(slot);
    let other = queue.dispatch(new_run(&orgs.go, None)).await.unwrap();
    assert!(other.taken.is_none(), "the local worker serves ts only");
    assert_eq!(slots.available_permits(), 1, "a slot not used is given back");
    // A free slot never jumps the queue: an older `ts` run waits, so the new one queues behind it.
    let behind = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap();
    assert!(behind.taken.is_none(), "FIFO per runner");
    // Nor jumps the session: the first run's session is busy.
    let (_, _) = (
        queue.claim("ts", &wk("x")).await.unwrap().unwrap(),
        queue.claim("ts", &wk("x")).await.unwrap().unwrap(),
    );
    let same = queue.dispatch(new_run(&orgs.ts, Some(claimed.run.session_id.clone()))).await.unwrap();
    assert!(same.taken.is_none(), "FIFO per session");
    assert_eq!(same.run.status, RunStatus::Queued);
}

/// Gives `queue` an in-process `ts` worker (`w`) with `slots` free slots.
fn local_worker(queue: &Queue, slots: usize) {
    queue.set_local(Local {
        runner: "ts".into(),
        worker: wk("w"),
        slots: Arc::new(tokio::sync::Semaphore::new(slots)),
    });
}

fn known_later(org: &OrgId, session: Option<SessionId>) -> NewRun {
    NewRun { known_later: true, ..new_run(org, session) }
}

fn completed_turn() -> Completion {
    use crate::domain::message::{Message, Role};
    Completion {
        outcome: RunOutcome::Completed(RunOutput { content: Some("hello".into()), tool_calls: Vec::new() }),
        usage: Usage { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 },
        messages: vec![Message::text(Role::User, "hi"), Message::text(Role::Assistant, "hello")],
        upstream_ms: 1.5,
        tail: vec![EventData::text("hello")],
    }
}

/// What is stored of a run, its session, its events and its session's messages, without the
/// ids and times that differ between two runs of the same turn.
async fn stored_shape(queue: &Queue, id: &RunId) -> Value {
    let id = id.clone();
    queue
        .db
        .read(move |c| {
            let run = runs::find_run(c, &id)?.unwrap();
            let session = sessions::find_session(c, &run.session_id)?.unwrap();
            let events = run_events::list_events_after(c, &id, 0, 100)?;
            let messages = messages::list_messages(c, &run.session_id)?;
            assert!(run.claimed_at.is_some() && run.started_at.is_some() && run.finished_at.is_some());
            assert_eq!(session.updated_at, run.finished_at.unwrap(), "the session was settled when the run ended");
            Ok(json!({
                "run": [run.status, run.runner, run.claimed_by, run.attempt, run.lease_expires_at,
                        run.cancel_requested, &*run.input, run.output, run.usage, run.error, &*run.resolved_profile],
                "session": [session.status, session.runner, session.user_id, &*session.resolved_profile],
                "events": events.iter().map(|e| {
                    let mut data = json!(e.data);
                    data.as_object_mut().map(|o| o.remove("session_id"));
                    json!([e.seq, e.kind(), data])
                }).collect::<Vec<_>>(),
                "messages": messages,
            }))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_run_known_later_that_writes_nothing_before_its_end_is_stored_whole_exactly_as_if_stored_at_dispatch()
 {
    let (_dir, queue, orgs) = setup().await;
    let slots = Arc::new(tokio::sync::Semaphore::new(2));
    queue.set_local(Local { runner: "ts".into(), worker: wk("w"), slots: Arc::clone(&slots) });

    let (usual, _slot) = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap().taken.unwrap();
    let (late, _slot2) = queue.dispatch(known_later(&orgs.ts, None)).await.unwrap().taken.unwrap();
    assert!(!usual.unstored && late.unstored);
    assert_eq!(
        (late.run.status, late.run.claimed_by.as_ref().map(WorkerId::as_str), late.next_seq),
        (RunStatus::Running, Some("wrk_w"), 3)
    );
    let (id, session) = (late.run.id.clone(), late.run.session_id.clone());
    let nothing = queue
        .db
        .read(move |c| {
            Ok((
                runs::find_run(c, &id)?.is_none(),
                sessions::find_session(c, &session)?.is_none(),
                run_events::last_seq(c, &id)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(nothing, (true, true, 0), "nothing of the run is written before it ends");

    for claimed in [&usual, &late] {
        let terminal =
            queue.finish(&claimed.run, &wk("w"), claimed.next_seq, completed_turn()).await.unwrap().unwrap();
        assert_eq!((terminal.seq, terminal.kind()), (4, EventType::Completed));
    }
    let (a, b) = (stored_shape(&queue, &usual.run.id).await, stored_shape(&queue, &late.run.id).await);
    assert_eq!(a, b, "stored whole at the end, the same rows as dispatch + finish");
    assert_eq!(b["events"].as_array().unwrap().len(), 4);
    assert_eq!(b["messages"].as_array().unwrap().len(), 2);
    // Finished once: a second finish finds the run no longer held.
    assert!(queue.finish(&late.run, &wk("w"), 5, completed_turn()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_run_known_later_is_stored_at_dispatch_when_the_local_worker_does_not_take_it_at_once() {
    let (_dir, queue, orgs) = setup().await;
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    queue.set_local(Local { runner: "ts".into(), worker: wk("w"), slots: Arc::clone(&slots) });
    let stored = |queue: &Arc<Queue>, id: RunId| {
        let queue = Arc::clone(queue);
        async move { queue.db.read(move |c| Ok(runs::find_run(c, &id)?.map(|r| r.status))).await.unwrap() }
    };

    // Another runner's run: queued, stored.
    let other = queue.dispatch(known_later(&orgs.go, None)).await.unwrap();
    assert!(other.taken.is_none());
    assert_eq!(stored(&queue, other.run.id.clone()).await, Some(RunStatus::Queued));
    assert_eq!(slots.available_permits(), 1, "a slot not used is given back");
    // Taken, but continuing a session: stored at dispatch (a later turn may queue behind it).
    let first = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap();
    let (claimed, slot) = first.taken.unwrap();
    queue.finish(&claimed.run, &wk("w"), claimed.next_seq, completed_turn()).await.unwrap().unwrap();
    drop(slot);
    let next = queue.dispatch(known_later(&orgs.ts, Some(claimed.run.session_id.clone()))).await.unwrap();
    let (next_claimed, slot) = next.taken.unwrap();
    assert!(!next_claimed.unstored);
    assert_eq!(stored(&queue, next.run.id.clone()).await, Some(RunStatus::Running));
    // No free slot: queued, stored.
    let full = queue.dispatch(known_later(&orgs.ts, None)).await.unwrap();
    assert!(full.taken.is_none());
    assert_eq!(stored(&queue, full.run.id.clone()).await, Some(RunStatus::Queued));
    drop(slot);
    // A free slot, but an older `ts` run waits (FIFO per runner): queued, stored.
    let behind = queue.dispatch(known_later(&orgs.ts, None)).await.unwrap();
    assert!(behind.taken.is_none());
    assert_eq!(stored(&queue, behind.run.id.clone()).await, Some(RunStatus::Queued));
}

#[tokio::test]
async fn an_unstored_run_whose_client_went_away_is_stored_cancelled() {
    let (_dir, queue, orgs) = setup().await;
    local_worker(&queue, 1);
    let (claimed, _slot) = queue.dispatch(known_later(&orgs.ts, None)).await.unwrap().taken.unwrap();
    assert!(claimed.unstored);
    queue.abandon(&claimed.run, &wk("w")).await.unwrap();
    let id = claimed.run.id.clone();
    let (run, session, events) = queue
        .db
        .read(move |c| {
            let run = runs::find_run(c, &id)?.unwrap();
            let session = sessions::find_session(c, &run.session_id)?.unwrap();
            Ok((run, session, run_events::list_events_after(c, &id, 0, 100)?))
        })
        .await
        .unwrap();
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.error.unwrap().code, crate::domain::outcome::ErrorCode::Cancelled);
    assert_eq!(session.status, SessionStatus::Idle);
    let kinds: Vec<_> = events.iter().map(|e| (e.seq, e.kind())).collect();
    assert_eq!(kinds, [(1, EventType::Queued), (2, EventType::Started), (3, EventType::Cancelled)]);
}

/// The next event a follower yields (failing after 5 s without one).
async fn next(follower: &mut follow::Follower) -> (i64, EventType) {
    let event = next_event(follower).await;
    (event.seq, event.kind())
}

/// The next event a follower yields, whole (failing after 5 s without one).
async fn next_event(follower: &mut follow::Follower) -> RunEvent {
    tokio::time::timeout(Duration::from_secs(5), follower.next()).await.unwrap().unwrap().unwrap()
}

/// A turn on a new session is not written at dispatch. A whole-answer turn's first write (a
/// tool's start) stores its run and session with that event, in one commit; a streamed turn's
/// sink stores them at once, before its first event. Either way a reader that followed the run
/// from before dispatch gets the dispatch events and the later ones in order, and the run then
/// ends as any run stored at dispatch does.
#[tokio::test]
async fn an_unstored_run_is_stored_by_its_first_write_and_its_events_reach_a_reader_in_order() {
    use crate::domain::event::{Emit as _, ToolStarted};
    use follow::Follower;
    use sink::{EventSink, SinkMode};

    let (_dir, queue, orgs) = setup().await;
    local_worker(&queue, 2);
    let stored = |queue: &Arc<Queue>, id: &RunId| {
        let (queue, id) = (Arc::clone(queue), id.clone());
        async move {
            queue
                .db
                .read(move |c| {
                    let run = runs::find_run(c, &id)?;
                    let session = match &run {
                        Some(r) => sessions::find_session(c, &r.session_id)?.map(|s| s.status),
                        None => None,
                    };
                    Ok((run.map(|r| r.status), session, run_events::last_seq(c, &id)?))
                })
                .await
                .unwrap()
        }
    };
    let running = (Some(RunStatus::Running), Some(SessionStatus::Running));

    for mode in [SinkMode::HoldUntilTool, SinkMode::Eager] {
        let new = known_later(&orgs.ts, None);
        let mut follower = Follower::fresh(queue.db.clone(), queue.hub(), new.id.clone());
        let (claimed, _slot) = queue.dispatch(new).await.unwrap().taken.unwrap();
        assert!(claimed.unstored);
        let id = claimed.run.id.clone();
        assert_eq!(stored(&queue, &id).await, (None, None, 0), "{mode:?}: nothing written at dispatch");

        let commits = queue.db.commits();
        let sink = EventSink::start(
            queue.db.clone(),
            Arc::clone(queue.hub()),
            id.clone(),
            claimed.next_seq,
            mode,
            Some(queue.drafts().clone()),
            Some(sink::Holder { worker: wk("w"), attempt: 1, on_lost: CancellationToken::new() }),
        );
        if mode == SinkMode::Eager {
            assert_eq!(next(&mut follower).await, (1, EventType::Queued));
            assert_eq!(next(&mut follower).await, (2, EventType::Started));
            let (status, session, seq) = stored(&queue, &id).await;
            assert_eq!(((status, session), seq), (running, 2), "stored before any event");
            assert_eq!(queue.db.commits() - commits, 1);
            // Events that come together: the first still goes alone (time to first token).
            for text in ["hel", "lo", " you"] {
                sink.emit(EventData::text(text));
            }
            let texts =
                [next_event(&mut follower).await, next_event(&mut follower).await].map(|e| (e.seq, e.data));
            assert_eq!(texts, [(3, EventData::text("hel")), (4, EventData::text("lo you"))]);
        } else {
            sink.emit(EventData::text("let me look"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert_eq!(stored(&queue, &id).await, (None, None, 0), "held until a tool starts");
            sink.emit(EventData::ToolStarted(ToolStarted {
                id: "c1".into(),
                name: "t".into(),
                arguments: "{}".into(),
            }));
            let seen = [next(&mut follower).await, next(&mut follower).await, next(&mut follower).await];
            assert_eq!(seen, [(1, EventType::Queued), (2, EventType::Started), (3, EventType::TextDelta)]);
            assert_eq!(next(&mut follower).await, (4, EventType::ToolStarted));
            let (status, session, seq) = stored(&queue, &id).await;
            assert_eq!(((status, session), seq), (running, 4));
            assert_eq!(queue.db.commits() - commits, 1, "run, session and events in one commit");
        }
        let (next_seq, tail) = sink.finish(0).await;
        assert!(tail.is_empty());
        let done = Completion { tail: Vec::new(), ..completed_turn() };
        let terminal = queue.finish(&claimed.run, &wk("w"), next_seq, done).await.unwrap().unwrap();
        assert_eq!((terminal.seq, terminal.kind()), (next_seq, EventType::Completed));
        assert_eq!(next(&mut follower).await, (next_seq, EventType::Completed));
        assert_eq!(
            stored(&queue, &id).await,
            (Some(RunStatus::Completed), Some(SessionStatus::Idle), next_seq)
        );
    }
}

/// A follower behind by more than a page reads on from SQLite without waiting for news; one at
/// the tail sees the run close.
#[tokio::test]
async fn a_follower_reads_a_long_log_page_by_page_and_sees_it_close() {
    use follow::Follower;
    use tokio::time::Instant;

    let (_dir, queue, orgs) = setup().await;
    let run = queue.dispatch(new_run(&orgs.ts, None)).await.unwrap().run;
    let id = run.id.clone();
    let texts: Vec<RunEvent> = (2..=1500)
        .map(|seq| RunEvent { seq, data: EventData::text(format!("t{seq}")), created_at: 1 })
        .collect();
    queue.db.write(move |c| run_events::insert_events(c, &id, &texts)).await.unwrap();

    let mut follower = Follower::new(queue.db.clone(), queue.hub(), run.id.clone(), 0);
    let first = follower.next_batch(Some(Instant::now())).await.unwrap();
    assert_eq!((first.events.len(), first.up_to_date, first.closed), (1000, false, false));
    let second = follower.next_batch(Some(Instant::now())).await.unwrap();
    assert_eq!((second.events.len(), second.up_to_date), (500, true), "read on without waiting");
    assert_eq!(second.events.last().map(|e| e.seq), Some(1500));

    let mut at_tail = Follower::at_tail(queue.db.clone(), queue.hub(), run.id.clone()).await.unwrap();
    assert_eq!(at_tail.position(), 1500);
    let soon = Instant::now() + Duration::from_millis(100);
    assert!(!at_tail.wait_closed(soon).await.unwrap(), "still open");
    queue.cancel(&run).await.unwrap();
    assert!(
        at_tail.wait_closed(Instant::now() + Duration::from_secs(5)).await.unwrap(),
        "closed by the cancel"
    );
}

/// Expires the lease of every run `worker` holds.
async fn expire_leases(queue: &Queue, worker: &str) {
    let worker = wk(worker);
    queue
        .db
        .write(move |c| {
            c.execute("UPDATE runs SET lease_expires_at = 0 WHERE claimed_by = ?1", [&worker])?;
            Ok(())
        })
        .await
        .unwrap();
}

/// A run whose lease expired goes back to the queue (attempt + 1, same runner), its old
/// holder's writes are fenced off, and after its last attempt it fails with a clear error.
#[tokio::test]
async fn the_sweep_gives_back_runs_whose_lease_expired_and_fences_their_old_holder() {
    let (_dir, queue, orgs) = setup().await;
    let run = queue.dispatch(new_run(&orgs.go, None)).await.unwrap().run;
    let claimed = queue.claim("go", &wk("gone")).await.unwrap().unwrap();
    assert!(queue.sweep().await.unwrap().is_empty(), "a live lease is left alone");
    expire_leases(&queue, "gone").await;
    let given = queue.sweep().await.unwrap();
    assert_eq!(
        given.iter().map(|g| (g.run.clone(), g.attempt, g.requeued)).collect::<Vec<_>>(),
        [(run.id.clone(), 2, true)]
    );

    // The old holder can neither write events nor finish: fenced on its attempt.
    let lost = CancellationToken::new();
    let holder = sink::Holder { worker: wk("gone"), attempt: 1, on_lost: lost.clone() };
    let stale = sink::EventSink::start(
        queue.db.clone(),
        Arc::clone(queue.hub()),
        run.id.clone(),
        3,
        sink::SinkMode::Eager,
        None,
        Some(holder),
    );
    crate::domain::event::Emit::emit(&stale, EventData::text("late"));
    let _ = stale.finish(3).await;
    assert!(lost.is_cancelled(), "the stale attempt is told to stop");
    let id = run.id.clone();
    let kinds: Vec<EventType> = queue
        .db
        .read(move |c| run_events::list_events_after(c, &id, 0, 100))
        .await
        .unwrap()
        .iter()
        .map(RunEvent::kind)
        .collect();
    assert_eq!(kinds, [EventType::Queued], "nothing of the lost attempt landed");
    assert!(queue.finish(&claimed.run, &wk("gone"), 2, completed_turn()).await.unwrap().is_none());

    // Attempts 2 and 3 are lost too: the run then fails, once, with a clear error.
    for attempt in [2, 3] {
        let again = queue.claim("go", &wk("gone")).await.unwrap().unwrap();
        assert_eq!(again.run.attempt, attempt);
        expire_leases(&queue, "gone").await;
        queue.sweep().await.unwrap();
    }
    let id = run.id.clone();
    let row = queue.db.read(move |c| runs::find_run(c, &id)).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempt), (RunStatus::Failed, 3));
    assert_eq!(row.error.unwrap().code, crate::domain::outcome::ErrorCode::MaxAttemptsExceeded);
    assert!(queue.claim("go", &wk("other")).await.unwrap().is_none());
}

/// A worker that stopped heartbeating for a lease loses its runs even if their leases were
/// extended far ahead.
#[tokio::test]
async fn the_sweep_gives_back_the_runs_of_a_worker_whose_heartbeat_went_stale() {
    let (_dir, queue, orgs) = setup().await;
    let new = crate::db::workers::NewWorker {
        name: "stale".into(),
        runtime: "go".into(),
        version: "1.0.0".into(),
        hostname: "h".into(),
        capacity: 1,
        embedded: false,
    };
    let (worker, _) = queue.register_worker(new).await.unwrap();
    let run = queue.dispatch(new_run(&orgs.go, None)).await.unwrap().run;
    queue.claim("go", &worker).await.unwrap().unwrap();
    queue.heartbeat(std::slice::from_ref(&worker)).await.unwrap();
    assert!(queue.sweep().await.unwrap().is_empty(), "a fresh heartbeat keeps its runs");
    let (id, w) = (run.id.clone(), worker.clone());
    queue
        .db
        .write(move |c| {
            c.execute("UPDATE workers SET last_heartbeat_at = 0 WHERE id = ?1", [&w])?;
            c.execute(
                "UPDATE runs SET lease_expires_at = ?2 WHERE id = ?1",
                rusqlite::params![id, i64::MAX],
            )?;
            Ok(())
        })
        .await
        .unwrap();
    let given = queue.sweep().await.unwrap();
    assert_eq!(given.len(), 1);
    assert!(given[0].requeued && given[0].run == run.id);
}
