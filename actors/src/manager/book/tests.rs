//! The task book, without actix: admission, placement, reports, stops, pruning and listing.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn at(second: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + second, 0).unwrap()
}

fn task(name: &str) -> Task {
    Task::new(name, "cube/echo:latest")
}

/// Admits `name` at `second` and marks the write done.
fn admitted(book: &mut TaskBook, name: &str, second: i64) -> TaskId {
    let change = book.admit(task(name), at(second)).unwrap();
    book.written(&change);
    change.task
}

/// What a node reports once the task's container runs.
fn running_report(book: &TaskBook, id: TaskId) -> Task {
    let mut t = book.working(&id).unwrap().clone();
    t.transition(TaskState::Running, "container abc started")
        .unwrap();
    t.container_id = "abc".into();
    t
}

fn finish(book: &mut TaskBook, id: TaskId, node: &str, code: i64) {
    let mut report = running_report(book, id);
    if let Merge::Changed(c) = book.merge(node, &report) {
        book.written(&c);
    }
    let state = if code == 0 {
        TaskState::Completed
    } else {
        TaskState::Failed
    };
    report
        .transition(state, format!("container exited with code {code}"))
        .unwrap();
    report.exit_code = Some(code);
    let Merge::Changed(c) = book.merge(node, &report) else {
        panic!("the end of the task is a change");
    };
    book.written(&c);
}

fn place(book: &mut TaskBook, id: TaskId, node: &str) -> Change {
    let change = book.place(id, node).unwrap();
    book.written(&change);
    change
}

#[test]
fn every_change_describes_itself_and_replays_to_the_same_book() {
    let mut book = TaskBook::default();
    let mut log = Vec::new();
    let change = book.admit(task("web"), at(0)).unwrap();
    assert_eq!((change.from, change.to), (None, Some(TaskState::Pending)));
    book.written(&change);
    log.push(change.clone());
    let id = change.task;
    let placed = place(&mut book, id, "n1");
    assert_eq!(
        (placed.from, placed.to, placed.placement),
        (Some(TaskState::Pending), Some(TaskState::Scheduled), 1)
    );
    log.push(placed);
    let Merge::Changed(ran) = book.merge("n1", &running_report(&book, id)) else {
        panic!("a running report is a change");
    };
    book.written(&ran);
    assert_eq!(ran.to, Some(TaskState::Running));
    log.push(*ran);
    // Changes travel as JSON and replay deterministically into an equal book.
    let json = serde_json::to_string(&log).unwrap();
    let replayed: Vec<Change> = serde_json::from_str(&json).unwrap();
    let mut copy = TaskBook::default();
    for change in &replayed {
        copy.apply(change);
    }
    assert_eq!(copy.get(&id), book.get(&id));
}

#[test]
fn readers_see_a_change_only_once_it_is_written() {
    let mut book = TaskBook::default();
    let change = book.admit(task("web"), at(0)).unwrap();
    let id = change.task;
    assert!(
        book.get(&id).is_none(),
        "a task is not visible before it is durable"
    );
    book.written(&change);
    assert_eq!(book.get(&id).unwrap().state(), TaskState::Pending);
    let placed = book.place(id, "n1").unwrap();
    assert_eq!(book.get(&id).unwrap().state(), TaskState::Pending);
    assert_eq!(book.working(&id).unwrap().state(), TaskState::Scheduled);
    book.written(&placed);
    assert_eq!(book.get(&id).unwrap().state(), TaskState::Scheduled);
}

#[test]
fn a_failed_admission_leaves_no_trace() {
    let mut book = TaskBook::default();
    let change = book.admit(task("web"), at(0)).unwrap();
    book.undo_admission(&change);
    assert!(book.working(&change.task).is_none());
    assert!(book.history.is_empty(), "its history went with it");
    assert!(book.query(&TaskFilter::default()).unwrap().tasks.is_empty());
    // The name is free again.
    assert!(book.admit(task("web"), at(1)).is_ok());
}

#[test]
fn a_repeat_is_the_task_and_a_live_name_is_unique_until_it_finishes() {
    let mut book = TaskBook::default();
    let first = task("web");
    let change = book.admit(first.clone(), at(0)).unwrap();
    // Under way: a repeat is refused rather than shown before it is durable.
    assert!(matches!(
        book.admit(first.clone(), at(0)),
        Err(BookError::Conflict(_))
    ));
    book.written(&change);
    assert!(matches!(
        book.admit(first.clone(), at(0)),
        Err(BookError::Exists(_))
    ));
    let clash = book.admit(task("web"), at(1));
    assert!(matches!(clash, Err(BookError::Conflict(m)) if m.contains("taken")));
    place(&mut book, first.id, "n1");
    finish(&mut book, first.id, "n1", 0);
    assert!(
        book.admit(task("web"), at(2)).is_ok(),
        "a finished task frees its name"
    );
    // A finished task cannot be submitted again under its ID.
    assert!(matches!(
        book.admit(first, at(3)),
        Err(BookError::Conflict(_))
    ));
}

#[test]
fn each_placement_gets_a_new_number_and_older_reports_are_stale() {
    let mut book = TaskBook::default();
    let id = admitted(&mut book, "web", 0);
    assert_eq!(place(&mut book, id, "n1").placement, 1);
    let old_copy = running_report(&book, id);
    let unplaced = book.unplace(id, "node n1 did not answer".into()).unwrap();
    book.written(&unplaced);
    assert_eq!(place(&mut book, id, "n2").placement, 2);
    // n1's copy of placement 1 is stale wherever it reports from.
    assert_eq!(book.merge("n1", &old_copy), Merge::Stale { placement: 1 });
    assert_eq!(book.merge("n2", &old_copy), Merge::Stale { placement: 1 });
    // n2's report of placement 2 is taken.
    assert!(matches!(
        book.merge("n2", &running_report(&book, id)),
        Merge::Changed(_)
    ));
}

#[test]
fn reports_go_through_the_state_machine() {
    let mut book = TaskBook::default();
    let id = admitted(&mut book, "web", 0);
    place(&mut book, id, "n1");
    let late = running_report(&book, id);
    finish(&mut book, id, "n1", 3);
    assert_eq!(book.get(&id).unwrap().state(), TaskState::Failed);
    assert_eq!(book.get(&id).unwrap().exit_code, Some(3));
    // A late Running report of the same placement cannot bring it back.
    assert_eq!(book.merge("n1", &late), Merge::Same);
    // A task unknown to the book is reported as such.
    assert_eq!(book.merge("n1", &task("stranger")), Merge::Unknown);
}

#[test]
fn a_stopped_task_keeps_its_node_and_a_copy_still_running_there_is_stale() {
    let mut book = TaskBook::default();
    let id = admitted(&mut book, "web", 0);
    place(&mut book, id, "n1");
    let running = running_report(&book, id);
    let stopped = book.stopped(id, None).unwrap();
    book.written(&stopped);
    assert_eq!(stopped.to, Some(TaskState::Completed));
    assert_eq!(book.get(&id).unwrap().reason, "stopped by user");
    assert!(book.get(&id).unwrap().host_ports.is_empty());
    assert_eq!(book.merge("n1", &running), Merge::Stale { placement: 1 });
}

#[test]
fn only_finished_tasks_are_removed_and_pruning_keeps_the_newest() {
    let mut book = TaskBook::default();
    let live = admitted(&mut book, "live", 0);
    assert!(matches!(book.remove(live), Err(BookError::Conflict(_))));
    let mut done = Vec::new();
    for i in 0..5 {
        let id = admitted(&mut book, &format!("t{i}"), i + 1);
        place(&mut book, id, "n1");
        finish(&mut book, id, "n1", 0);
        done.push(id);
    }
    assert_eq!(book.finished_count(), 5);
    let keep_two = Retention {
        max_finished: 2,
        max_age: Duration::from_secs(3600),
    };
    let doomed = book.prunable(Utc::now(), keep_two, usize::MAX);
    assert_eq!(doomed.len(), 3);
    // A slice of them, oldest first.
    assert_eq!(book.prunable(Utc::now(), keep_two, 2), doomed[..2]);
    for id in doomed {
        let change = book.remove(id).unwrap();
        assert_eq!(change.to, None);
        book.written(&change);
    }
    assert_eq!(book.finished_count(), 2);
    // By age: everything finished before now minus a second goes.
    let young = Retention {
        max_finished: 100,
        max_age: Duration::from_secs(1),
    };
    let later = Utc::now() + chrono::Duration::seconds(10);
    assert_eq!(book.prunable(later, young, usize::MAX).len(), 2);
    assert!(book.get(&live).is_some());
}

/// A name lists every task that bore it, finished ones too, in arrival order, and no task of
/// a name it is only the start of.
#[test]
fn a_name_lists_every_task_that_bore_it_and_no_other() {
    let mut book = TaskBook::default();
    let first = admitted(&mut book, "web", 0);
    place(&mut book, first, "n1");
    finish(&mut book, first, "n1", 0);
    admitted(&mut book, "web2", 1);
    admitted(&mut book, "we", 2);
    let second = admitted(&mut book, "web", 3);
    assert_eq!(named(&book, "web"), [first, second]);
    assert!(named(&book, "w").is_empty());
}

/// The IDs of the tasks a query by `name` lists, in order.
fn named(book: &TaskBook, name: &str) -> Vec<TaskId> {
    let filter = TaskFilter {
        name: Some(name.into()),
        ..TaskFilter::default()
    };
    let page = book.query(&filter).unwrap();
    page.tasks.iter().map(|t| t.id).collect()
}

#[test]
fn listing_filters_pages_and_keeps_arrival_order() {
    let mut book = TaskBook::default();
    let ids: Vec<TaskId> = (0..5)
        .map(|i| admitted(&mut book, &format!("t{i}"), i))
        .collect();
    place(&mut book, ids[1], "n1");
    place(&mut book, ids[3], "n2");
    let all = book.query(&TaskFilter::default()).unwrap();
    assert_eq!(all.tasks.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    let scheduled = TaskFilter {
        state: Some(TaskState::Scheduled),
        ..TaskFilter::default()
    };
    let got: Vec<TaskId> = book
        .query(&scheduled)
        .unwrap()
        .tasks
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(got, [ids[1], ids[3]]);
    let on_n2 = TaskFilter {
        node: Some("n2".into()),
        ..TaskFilter::default()
    };
    assert_eq!(book.query(&on_n2).unwrap().tasks[0].id, ids[3]);
    assert_eq!(named(&book, "t4"), [ids[4]]);
    // Pages of two, following the cursor.
    let mut page = book
        .query(&TaskFilter {
            limit: Some(2),
            ..TaskFilter::default()
        })
        .unwrap();
    let mut seen: Vec<TaskId> = page.tasks.iter().map(|t| t.id).collect();
    while let Some(next) = page.next.clone() {
        page = book
            .query(&TaskFilter {
                limit: Some(2),
                after: Some(next),
                ..TaskFilter::default()
            })
            .unwrap();
        seen.extend(page.tasks.iter().map(|t| t.id));
    }
    assert_eq!(seen, ids);
    let bad = TaskFilter {
        after: Some("nonsense".into()),
        ..TaskFilter::default()
    };
    assert!(book.query(&bad).is_err());
}

#[test]
fn pending_tasks_wait_out_their_back_off_oldest_first() {
    let mut book = TaskBook::default();
    let a = admitted(&mut book, "a", 0);
    let b = admitted(&mut book, "b", 1);
    let now = Instant::now();
    assert_eq!(book.pending_ready(now), [a, b]);
    let wait = book.back_off(a, now);
    assert_eq!(wait, FIRST_BACKOFF);
    assert_eq!(book.back_off(a, now), FIRST_BACKOFF * 2);
    assert_eq!(book.pending_ready(now), [b]);
    assert_eq!(book.pending_ready(now + MAX_BACKOFF), [a, b]);
    book.set_in_flight(b, true);
    book.clear_backoffs();
    assert_eq!(book.pending_ready(now), [a]);
}

#[test]
fn a_task_s_history_keeps_its_last_state_changes_and_goes_with_it() {
    let mut book = TaskBook::default();
    let id = admitted(&mut book, "web", 0);
    place(&mut book, id, "n1");
    finish(&mut book, id, "n1", 0);
    let states: Vec<TaskState> = book.history(&id).iter().map(|t| t.to).collect();
    assert_eq!(
        states,
        [
            TaskState::Pending,
            TaskState::Scheduled,
            TaskState::Running,
            TaskState::Completed
        ]
    );
    let last = book.history(&id).pop().unwrap();
    assert_eq!((last.node.as_deref(), last.placement), (Some("n1"), 1));
    let removed = book.remove(id).unwrap();
    book.written(&removed);
    assert!(book.history(&id).is_empty() && book.history.is_empty());
}

/// The indexes of `book`, to compare with those a load of the same tasks builds.
fn indexes(book: &TaskBook) -> String {
    // B-trees: their order is the keys' own.
    let sorted =
        |m: &BTreeMap<String, BTreeSet<Order>>| format!("{:?}", m.iter().collect::<Vec<_>>());
    let mut states: Vec<_> = book
        .by_state
        .iter()
        .map(|(s, o)| (s.to_string(), o))
        .collect();
    states.sort();
    let mut names: Vec<_> = book.active_names.iter().collect();
    names.sort();
    format!(
        "{:?} {states:?} {} {} {:?} {names:?}",
        book.all,
        sorted(&book.by_node),
        format!("{:?}", book.by_name),
        book.finished
    )
}

#[test]
fn changes_keep_the_indexes_a_fresh_load_of_the_same_tasks_builds() {
    let mut book = TaskBook::default();
    let a = admitted(&mut book, "a", 0);
    let b = admitted(&mut book, "b", 1);
    let c = admitted(&mut book, "c", 2);
    place(&mut book, a, "n1");
    place(&mut book, b, "n2");
    finish(&mut book, a, "n1", 0);
    let Merge::Changed(ran) = book.merge("n2", &running_report(&book, b)) else {
        panic!("a running report is a change");
    };
    book.written(&ran);
    // The same name again, now that the first "a" finished.
    let again = admitted(&mut book, "a", 3);
    place(&mut book, again, "n2");
    let lost = book.lose(b, "node n2 is down".into()).unwrap();
    book.written(&lost);
    place(&mut book, b, "n1");
    let removed = book.remove(a).unwrap();
    book.written(&removed);
    let tasks: Vec<Task> = [b, c, again]
        .iter()
        .map(|id| book.working(id).unwrap().clone())
        .collect();
    assert_eq!(indexes(&book), indexes(&TaskBook::load(tasks)));
}
