//! One suite, run against both backends, plus the LMDB-only cases (reopen, corruption, versions).

use std::collections::BTreeSet;

use futures_util::future::join_all;

use super::*;
use crate::task::{StoredEvent, Task, TaskEvent, TaskState};

fn task(i: usize) -> Task {
    let mut t = Task::new(format!("task-{i}"), "cube/echo:latest");
    t.memory = i as u64;
    t
}

/// Put, get, list, count and delete behave the same on `store`, whatever its backend.
async fn basic_suite(store: Addr<Store>) {
    let a = task(1);
    let b = task(2);
    store.send(Put(a.clone())).await.unwrap().unwrap();
    store.send(Put(b.clone())).await.unwrap().unwrap();
    assert_eq!(
        store
            .send(Get::<Task>::new(a.key()))
            .await
            .unwrap()
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.send(Get::<Task>::new("nope")).await.unwrap().unwrap(),
        None
    );
    assert_eq!(store.send(Count::<Task>::all()).await.unwrap().unwrap(), 2);

    let mut a2 = a.clone();
    a2.transition(TaskState::Scheduled, "placed").unwrap();
    store.send(Put(a2.clone())).await.unwrap().unwrap();
    let listed = store.send(List::<Task>::all()).await.unwrap().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&a2) && listed.contains(&b));

    // Tables are separate: an event does not show up among tasks.
    let event = submitted(&a);
    store.send(Put(event.clone())).await.unwrap().unwrap();
    assert_eq!(
        store
            .send(List::<StoredEvent>::all())
            .await
            .unwrap()
            .unwrap(),
        vec![event]
    );
    assert_eq!(store.send(Count::<Task>::all()).await.unwrap().unwrap(), 2);

    store
        .send(Delete::<Task>::new(a.key()))
        .await
        .unwrap()
        .unwrap();
    store
        .send(Delete::<Task>::new("never-there"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .send(Get::<Task>::new(a.key()))
            .await
            .unwrap()
            .unwrap(),
        None
    );
    assert_eq!(store.send(Count::<Task>::all()).await.unwrap().unwrap(), 1);
}

/// 10,000 tasks written by concurrent callers are all answered, stored and listed,
/// and they share commits rather than taking one each.
async fn many_writers_suite(store: Addr<Store>) -> Vec<Task> {
    let tasks: Vec<Task> = (0..10_000).map(task).collect();
    let before = store.send(CommitCount).await.unwrap();
    let results = join_all(tasks.iter().map(|t| store.send(Put(t.clone())))).await;
    assert!(results.into_iter().all(|r| matches!(r, Ok(Ok(())))));
    let commits = store.send(CommitCount).await.unwrap() - before;
    assert!(
        commits < 10_000,
        "group commit should batch writes, made {commits} commits"
    );
    assert_eq!(
        store.send(Count::<Task>::all()).await.unwrap().unwrap(),
        10_000
    );
    let listed: BTreeSet<_> = store
        .send(List::<Task>::all())
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, tasks.iter().map(|t| t.id).collect());
    tasks
}

#[actix_rt::test]
async fn memory_backend_passes_the_basic_suite() {
    basic_suite(Store::memory()).await;
}

#[actix_rt::test]
async fn lmdb_backend_passes_the_basic_suite() {
    let dir = tempfile::tempdir().unwrap();
    basic_suite(Store::lmdb(&dir.path().join("data")).unwrap()).await;
}

#[actix_rt::test]
async fn memory_backend_takes_10k_concurrent_writes() {
    many_writers_suite(Store::memory()).await;
}

#[actix_rt::test]
async fn lmdb_backend_takes_10k_concurrent_writes_and_keeps_them_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let store = Store::lmdb(&path).unwrap();
    let tasks = many_writers_suite(store.clone()).await;
    store.send(Close).await.unwrap();

    let store = Store::lmdb(&path).unwrap();
    assert_eq!(
        store.send(Count::<Task>::all()).await.unwrap().unwrap(),
        10_000
    );
    for t in tasks.iter().step_by(997) {
        assert_eq!(
            store
                .send(Get::<Task>::new(t.key()))
                .await
                .unwrap()
                .unwrap()
                .as_ref(),
            Some(t)
        );
    }
    store.send(Close).await.unwrap();
}

#[actix_rt::test]
async fn lmdb_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("data");
    let store = Store::lmdb(&path).unwrap();
    store.send(Put(task(1))).await.unwrap().unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&path.join("data.mdb")), 0o600);
    store.send(Close).await.unwrap();
}

#[actix_rt::test]
async fn a_corrupt_data_file_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.mdb"), vec![0xA5u8; 64 * 1024]).unwrap();
    let err = Store::lmdb(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("not an LMDB file"), "{message}");
}

#[actix_rt::test]
async fn a_store_of_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    lmdb::set_version_for_test(dir.path(), "999");
    let err = Store::lmdb(dir.path()).unwrap_err();
    assert_eq!(
        err,
        StoreError::Version {
            path: dir.path().to_path_buf(),
            found: "999".into(),
            expected: FORMAT_VERSION
        }
    );
}

#[actix_rt::test]
async fn a_file_where_the_directory_should_be_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::lmdb(&file).unwrap_err();
    assert!(err.to_string().contains("not a directory"), "{err}");
}

#[actix_rt::test]
async fn a_record_that_does_not_decode_is_reported_as_corrupt() {
    let store = Store::memory();
    // A node stored under the tasks table's key space cannot be read back as a task.
    store
        .send(Put(event_as_task_shape()))
        .await
        .unwrap()
        .unwrap();
    let err = store.send(List::<Task>::all()).await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Corrupt {
                table: Table::Tasks,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A record type that lands in the tasks table but is not a task.
#[derive(serde::Serialize, serde::Deserialize)]
struct NotATask {
    id: String,
}

impl Record for NotATask {
    const TABLE: Table = Table::Tasks;
    fn key(&self) -> String {
        self.id.clone()
    }
}

fn event_as_task_shape() -> NotATask {
    NotATask { id: "x".into() }
}

#[actix_rt::test]
async fn a_data_dir_of_format_1_is_migrated_with_its_tasks_events_and_nodes_intact() {
    // Written by the store of format version 1 (commit ca4565c): three tasks (Pending,
    // Scheduled, Running), their three submission events and one remote node.
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture.join("data.mdb"), dir.path().join("data.mdb")).unwrap();
    let store = Store::lmdb(dir.path()).unwrap();
    let tasks: Vec<Task> = store.send(List::all()).await.unwrap().unwrap();
    let states: Vec<(String, TaskState)> =
        tasks.iter().map(|t| (t.name.clone(), t.state())).collect();
    assert_eq!(
        states,
        [
            ("fixture-0".to_string(), TaskState::Pending),
            ("fixture-1".to_string(), TaskState::Scheduled),
            ("fixture-2".to_string(), TaskState::Running),
        ]
    );
    assert_eq!(tasks[2].container_id, "abcdef0123456789");
    assert_eq!(tasks[1].node.as_deref(), Some("node-1"));
    let nodes: Vec<crate::node::Node> = store.send(List::all()).await.unwrap().unwrap();
    assert_eq!(nodes[0].address, "http://127.0.0.1:5556");
    assert_eq!(
        store
            .send(Count::<StoredEvent>::all())
            .await
            .unwrap()
            .unwrap(),
        3
    );
    // Tasks and events are now keyed in arrival order, events under their task's key: reading
    // a task by its key, and removing a task's events by prefix, work.
    let by_key = store
        .send(Get::<Task>::new(tasks[1].key()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_key.as_ref(), Some(&tasks[1]));
    let ops = vec![Op::delete_prefix::<StoredEvent>(events_of(&tasks[0]))];
    store.send(Batch(ops)).await.unwrap().unwrap();
    let events: Vec<StoredEvent> = store.send(List::all()).await.unwrap().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events.iter().all(|e| e.task.id != tasks[0].id));
    store.send(Close).await.unwrap();
    // Reopened, it is of the current version and needs no migration.
    let store = Store::lmdb(dir.path()).unwrap();
    let again: Vec<Task> = store.send(List::all()).await.unwrap().unwrap();
    assert_eq!(again.len(), 3);
}

/// The nodes of a shared store each pass the basic suite on their own, see only their own
/// records (prefix deletions included), and share one commit stream; in the nodes' layout
/// (`nodes`) too.
async fn shared_suite(kind: StoreKind, nodes: bool) {
    let shared = if nodes {
        SharedStore::open_nodes_with(&kind, StoreMetrics::default())
    } else {
        SharedStore::open(&kind)
    }
    .unwrap();
    let (one, two) = (shared.node("node-1"), shared.node("node-10"));
    basic_suite(one.clone()).await;
    basic_suite(two.clone()).await;
    let t = task(7);
    one.send(Put(t.clone())).await.unwrap().unwrap();
    one.send(Put(submitted(&t))).await.unwrap().unwrap();
    two.send(Put(submitted(&t))).await.unwrap().unwrap();
    let on_one = one.send(List::<Task>::all()).await.unwrap().unwrap();
    let on_two = two.send(List::<Task>::all()).await.unwrap().unwrap();
    assert_eq!(on_one.len(), on_two.len() + 1, "{on_one:?} / {on_two:?}");
    assert_eq!(
        one.send(Get::<Task>::new(t.key())).await.unwrap().unwrap(),
        Some(t.clone())
    );
    assert_eq!(
        two.send(Get::<Task>::new(t.key())).await.unwrap().unwrap(),
        None
    );
    // Removing node-1's events of the task leaves node-10's.
    let count = |store: &Addr<Store>| {
        let store = store.clone();
        async move {
            store
                .send(Count::<StoredEvent>::all())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (before_one, before_two) = (count(&one).await, count(&two).await);
    let ops = vec![Op::delete_prefix::<StoredEvent>(events_of(&t))];
    one.send(Batch(ops)).await.unwrap().unwrap();
    assert_eq!(count(&one).await, before_one - 1);
    assert_eq!(count(&two).await, before_two);
    let commits = one.send(CommitCount).await.unwrap();
    assert_eq!(two.send(CommitCount).await.unwrap(), commits, "one writer");
    // Removing all of node-1's tasks leaves node-10's.
    let tasks = |store: &Addr<Store>| {
        let store = store.clone();
        async move { store.send(Count::<Task>::all()).await.unwrap().unwrap() }
    };
    let on_two = tasks(&two).await;
    assert!(tasks(&one).await > 0 && on_two > 0);
    let ops = vec![Op::delete_prefix::<Task>("")];
    one.send(Batch(ops)).await.unwrap().unwrap();
    assert_eq!(tasks(&one).await, 0);
    assert_eq!(tasks(&two).await, on_two);
    assert!(
        one.send(List::<Task>::all())
            .await
            .unwrap()
            .unwrap()
            .is_empty()
    );
}

#[actix_rt::test]
async fn nodes_of_a_shared_memory_store_are_apart() {
    shared_suite(StoreKind::Memory, false).await;
    shared_suite(StoreKind::Memory, true).await;
}

#[actix_rt::test]
async fn nodes_of_a_shared_lmdb_store_are_apart() {
    for nodes in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let kind = StoreKind::Lmdb {
            dir: dir.path().to_path_buf(),
            map_size: 64 << 20,
        };
        shared_suite(kind, nodes).await;
    }
}

/// Tasks written under node prefixes (format 2) are moved to the nodes' layout when it opens,
/// each node's to it (a node's name may hold an `@`), the other tables untouched; under the
/// prefixes none is left.
#[test]
fn tasks_under_node_prefixes_move_to_the_nodes_layout_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, d) = (task(1), task(2), task(3), task(4));
    let put = |key: String, value: &Task| WriteOp::Put {
        table: Table::Tasks,
        key,
        value: serde_json::to_vec(value).unwrap(),
    };
    let event = WriteOp::Put {
        table: Table::Events,
        key: format!("node-1/{}/e", a.key()),
        value: b"{}".to_vec(),
    };
    let old = lmdb::LmdbBackend::open(dir.path(), 64 << 20).unwrap();
    old.apply(&[
        put(format!("node-1/{}", a.key()), &a),
        put(format!("node-1/{}", b.key()), &b),
        put(format!("node-10/{}", c.key()), &c),
        put(format!("team@x-1/{}", d.key()), &d),
        event,
    ])
    .unwrap();
    drop(old);

    let inner: Arc<dyn Backend> = Arc::new(lmdb::LmdbBackend::open(dir.path(), 64 << 20).unwrap());
    let nodes = layout::NodeLayout::open(inner).unwrap();
    let keys = |prefix: &str| -> Vec<String> {
        let listed = nodes.list(Table::Tasks, prefix).unwrap();
        listed.into_iter().map(|(k, _)| k).collect()
    };
    let mut on_one = vec![format!("node-1/{}", a.key()), format!("node-1/{}", b.key())];
    on_one.sort();
    assert_eq!(keys("node-1/"), on_one);
    assert_eq!(keys("node-10/"), vec![format!("node-10/{}", c.key())]);
    assert_eq!(keys("team@x-1/"), vec![format!("team@x-1/{}", d.key())]);
    let got = nodes
        .get(Table::Tasks, &format!("node-1/{}", a.key()))
        .unwrap();
    assert_eq!(got, Some(serde_json::to_vec(&a).unwrap()));
    assert_eq!(nodes.count(Table::Events, "node-1/").unwrap(), 1);
    drop(nodes);

    // Without the layout: the four tasks, none under a node's prefix.
    let raw = lmdb::LmdbBackend::open(dir.path(), 64 << 20).unwrap();
    assert_eq!(raw.count(Table::Tasks, "node-1/").unwrap(), 0);
    assert_eq!(raw.count(Table::Tasks, "team@x-1/").unwrap(), 0);
    let stored: Vec<String> = raw
        .list(Table::Tasks, "")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(stored.len(), 4);
    assert!(
        stored.contains(&format!("{}@team@x-1", d.key())),
        "{stored:?}"
    );
    assert!(
        stored.contains(&format!("{}@node-10", c.key())),
        "{stored:?}"
    );
}

/// A `Writer` writes under its store's prefix, in order with the actor's writes, and tells the
/// outcome on the writer thread once the write is durable.
#[actix_rt::test]
async fn a_writer_is_told_once_its_write_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedStore::open(&StoreKind::Lmdb {
        dir: dir.path().to_path_buf(),
        map_size: 64 << 20,
    })
    .unwrap();
    let node = shared.node("node-1");
    let writer = node.send(OpenWriter).await.unwrap();
    let t = task(3);
    let (told, outcome) = tokio::sync::oneshot::channel();
    let caller = std::thread::current().id();
    writer.write_then(vec![Op::put(&t).unwrap()], move |res| {
        let _ = told.send((res, std::thread::current().id()));
    });
    let (res, thread) = outcome.await.unwrap();
    assert_eq!(res, Ok(()));
    assert_ne!(thread, caller, "told on the writer thread");
    assert_eq!(
        node.send(Get::<Task>::new(t.key())).await.unwrap().unwrap(),
        Some(t.clone()),
        "written under the node's prefix"
    );
    let whole = shared.whole();
    assert_eq!(
        whole
            .send(Get::<Task>::new(format!("node-1/{}", t.key())))
            .await
            .unwrap()
            .unwrap(),
        Some(t)
    );
}

/// A write whose writer thread is gone is told `Closed`, never left waiting.
#[test]
fn a_write_that_never_reaches_a_commit_is_told_closed() {
    let (writes, queue) = mpsc::unbounded_channel();
    let writer = Writer {
        writes,
        prefix: String::new(),
    };
    drop(queue);
    let (told, mut outcome) = tokio::sync::oneshot::channel();
    writer.write_then(vec![Op::put(&task(1)).unwrap()], move |res| {
        let _ = told.send(res);
    });
    assert_eq!(outcome.try_recv(), Ok(Err(StoreError::Closed)));
}

/// A task's key is `<submit nanos, 16 hex digits>.<id>`, as `format!` writes it, at the edges
/// too (no submit time, a time before 1970, the largest time).
#[test]
fn a_task_key_is_its_submit_nanos_in_hex_then_its_id() {
    use chrono::{DateTime, Utc};
    let times = [
        None,
        Some(DateTime::<Utc>::UNIX_EPOCH),
        DateTime::from_timestamp(-5, 0),
        DateTime::from_timestamp(1_795_000_000, 123_456_789),
        DateTime::from_timestamp_nanos(i64::MAX).into(),
    ];
    for time in times {
        let mut t = task(1);
        t.submit_time = time;
        let nanos = time.and_then(|t| t.timestamp_nanos_opt()).unwrap_or(0);
        assert_eq!(t.key(), format!("{:016x}.{}", nanos.max(0), t.id));
    }
}

/// The stored envelope of a fresh submission of `task`.
fn submitted(task: &Task) -> StoredEvent {
    let event = TaskEvent::run(task.clone());
    StoredEvent::of(event.id, event.state, event.timestamp, task)
}

#[test]
fn an_envelope_stored_with_its_whole_task_reads_as_one_naming_it_under_the_same_key() {
    let mut task = Task::new("web", "cube/echo:latest");
    task.submit_time = Some(chrono::Utc::now());
    let whole = TaskEvent::run(task.clone());
    let old: StoredEvent = serde_json::from_slice(&serde_json::to_vec(&whole).unwrap()).unwrap();
    let new = StoredEvent::of(whole.id, whole.state, whole.timestamp, &task);
    assert_eq!(old, new);
    assert_eq!(old.key(), format!("{}/{}", task.key(), whole.id));
    assert!(old.key().starts_with(&events_of(&task)));
    // What is written now names the task and holds none of its specification.
    let written = String::from_utf8(serde_json::to_vec(&new).unwrap()).unwrap();
    assert!(!written.contains("cube/echo"), "{written}");
}
