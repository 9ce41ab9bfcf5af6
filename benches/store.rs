//! Durable writes to the LMDB store: one writer waiting for each commit (the baseline: one
//! fsync per write) against many concurrent writers sharing commits (group commit), in one run.
//!
//! Run with `cargo bench --bench store`. Prints writes/s and the ratio to the baseline.

use std::time::Instant;

use cube_actors::store::{CommitCount, Put, Store};
use cube_actors::task::Task;
use futures_util::future::join_all;

const WRITES: usize = 2_000;

fn main() {
    actix::System::new().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::lmdb(dir.path()).unwrap();

        let start = Instant::now();
        for i in 0..WRITES {
            store.send(Put(Task::new(format!("seq-{i}"), "img"))).await.unwrap().unwrap();
        }
        let one_by_one = WRITES as f64 / start.elapsed().as_secs_f64();
        let commits_before = store.send(CommitCount).await.unwrap();

        let start = Instant::now();
        let puts = (0..WRITES).map(|i| store.send(Put(Task::new(format!("conc-{i}"), "img"))));
        assert!(join_all(puts).await.into_iter().all(|r| matches!(r, Ok(Ok(())))));
        let concurrent = WRITES as f64 / start.elapsed().as_secs_f64();
        let commits = store.send(CommitCount).await.unwrap() - commits_before;

        println!("{WRITES} durable task writes to LMDB");
        println!("one writer, a commit each (baseline)  {one_by_one:>10.0} writes/s");
        println!("{WRITES} concurrent writers, group commit  {concurrent:>10.0} writes/s ({commits} commits)");
        println!("ratio to the baseline: {:.1}", concurrent / one_by_one);
    });
}
