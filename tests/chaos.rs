//! A seeded randomized fault test, in one process: a manager and three workers on a simulated
//! engine that outlives the workers (as dockerd outlives `cube worker`), and faults in random
//! order: tasks submitted, workers killed and restarted from their stores, containers dying,
//! nodes lost long enough to be Down and then returning, the manager killed and restarted from
//! its store. After each schedule of faults, once every worker is back, the cluster must settle
//! to: every acknowledged task exists; no task has two running containers; every running
//! container is the current container of a Running task of the worker that made it (nothing
//! orphaned); and what the manager says runs is what the workers run.
//!
//! `CUBE_CHAOS_SEED` replays a run (a failure prints its seed: the same faults, in the same
//! order, with the same waits); `CUBE_CHAOS_SCHEDULES` sets how many schedules (200 by default).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix::prelude::*;
use cube_actors::manager::{
    AddLocalWorker, GetOne, ListTasks, Manager, ManagerConfig, Retention, Submit, TaskFilter,
};
use cube_actors::metrics::MetricsCollector;
use cube_actors::resources::Resources;
use cube_actors::runtime::SimEngine;
use cube_actors::store::Store;
use cube_actors::task::{Task, TaskEvent, TaskId, TaskState};
use cube_actors::worker::{RuntimeKind, Sync, Worker, WorkerConfig};

/// A small deterministic generator (xorshift), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A worker node: its store outlives its actor, which runs in an arbiter of its own so that it
/// can be killed.
struct Node {
    name: String,
    store: Addr<Store>,
    running: Option<(Arbiter, Addr<Worker>)>,
}

/// The cluster under test.
struct Cluster {
    engine: SimEngine,
    metrics: Addr<MetricsCollector>,
    manager_store: Addr<Store>,
    manager: Option<(Arbiter, Addr<Manager>)>,
    nodes: Vec<Node>,
    capacity: Resources,
}

impl Cluster {
    async fn start_worker(&mut self, i: usize) {
        let node = &self.nodes[i];
        let config = WorkerConfig::test_node(node.name.clone(), self.capacity, 3);
        let (store, engine, metrics) = (
            node.store.clone(),
            self.engine.clone(),
            self.metrics.clone(),
        );
        let arbiter = Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        arbiter.spawn(async move {
            let runtime = RuntimeKind::Sim {
                known_images: None,
                engine: Some(engine),
            };
            let worker = Worker::start(config, store, runtime, Some(metrics)).await;
            let _ = tx.send(worker.expect("a worker restarts from its store"));
        });
        let worker = rx.await.unwrap();
        if let Some((_, manager)) = &self.manager {
            manager.do_send(AddLocalWorker {
                name: self.nodes[i].name.clone(),
                worker: worker.clone(),
                capacity: self.capacity,
            });
        }
        self.nodes[i].running = Some((arbiter, worker));
    }

    fn kill_worker(&mut self, i: usize) {
        if let Some((arbiter, _)) = self.nodes[i].running.take() {
            arbiter.stop();
        }
    }

    async fn start_manager(&mut self) {
        let config = ManagerConfig {
            poll_interval: Duration::from_millis(50),
            sync_wait: Duration::from_millis(200),
            node_down_after: Duration::from_millis(300),
            retention: Retention {
                max_finished: usize::MAX,
                max_age: Duration::from_secs(3600),
            },
            ..ManagerConfig::default()
        };
        let store = self.manager_store.clone();
        let arbiter = Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        arbiter.spawn(async move {
            let manager = Manager::start(config, store).await;
            let _ = tx.send(manager.expect("the manager restarts from its store"));
        });
        let manager = rx.await.unwrap();
        for node in &self.nodes {
            if let Some((_, worker)) = &node.running {
                manager.do_send(AddLocalWorker {
                    name: node.name.clone(),
                    worker: worker.clone(),
                    capacity: self.capacity,
                });
            }
        }
        self.manager = Some((arbiter, manager));
    }

    fn kill_manager(&mut self) {
        if let Some((arbiter, _)) = self.manager.take() {
            arbiter.stop();
        }
    }

    fn manager(&self) -> &Addr<Manager> {
        &self.manager.as_ref().expect("a manager runs").1
    }

    /// Why the cluster is not (yet) in the state it must settle to, if it is not.
    async fn unsettled(&self, acknowledged: &[TaskId]) -> Option<String> {
        let manager = self.manager();
        for id in acknowledged {
            match manager.send(GetOne(*id)).await {
                Ok(Ok(_)) => {}
                other => return Some(format!("acknowledged task {id} is missing: {other:?}")),
            }
        }
        let tasks = manager
            .send(ListTasks(TaskFilter::default()))
            .await
            .ok()?
            .ok()?
            .tasks;
        if let Some(t) = tasks
            .iter()
            .find(|t| !t.is_finished() && t.state() != TaskState::Running)
        {
            return Some(format!(
                "task {} is still {}: {}",
                t.id,
                t.state(),
                t.reason
            ));
        }
        // What each worker runs, and the store epoch its containers carry.
        let mut runs: HashMap<String, (String, BTreeMap<TaskId, Task>)> = HashMap::new();
        for node in &self.nodes {
            let (_, worker) = node.running.as_ref()?;
            let full = Sync {
                cursor: None,
                wait: Duration::ZERO,
            };
            let reply = worker.send(full).await.ok()?.ok()?;
            let tasks = reply.tasks.into_iter().map(|t| (t.id, t)).collect();
            runs.insert(node.name.clone(), (reply.epoch.to_string(), tasks));
        }
        let mut copies: HashMap<TaskId, usize> = HashMap::new();
        for (container, task, store, running) in self.engine.containers() {
            if !running {
                continue;
            }
            *copies.entry(task).or_default() += 1;
            let owner = runs.values().find(|(epoch, _)| *epoch == store);
            let owned = owner
                .and_then(|(_, tasks)| tasks.get(&task))
                .is_some_and(|t| t.state() == TaskState::Running && t.container_id == container);
            if !owned {
                return Some(format!("container {container} of task {task} runs unowned"));
            }
        }
        if let Some((task, n)) = copies.iter().find(|(_, n)| **n > 1) {
            return Some(format!("task {task} runs {n} times"));
        }
        for t in tasks.iter().filter(|t| t.state() == TaskState::Running) {
            let node = t.node.as_deref().unwrap_or("?");
            let there = runs.get(node).and_then(|(_, tasks)| tasks.get(&t.id));
            let same = there.is_some_and(|w| {
                w.state() == TaskState::Running && w.container_id == t.container_id
            });
            if !same {
                return Some(format!(
                    "the manager has {} Running on {node}, the node does not",
                    t.id
                ));
            }
        }
        None
    }
}

#[actix_rt::test]
async fn random_faults_never_lose_duplicate_or_orphan_a_task() {
    let seed = std::env::var("CUBE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_u128() as u64 | 1);
    let schedules: usize = std::env::var("CUBE_CHAOS_SCHEDULES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    println!("chaos: seed {seed} (replay with CUBE_CHAOS_SEED={seed}), {schedules} schedules");
    let mut rng = Rng(seed);
    let dir = std::env::temp_dir();
    let mut cluster = Cluster {
        engine: SimEngine::default(),
        metrics: MetricsCollector::new(dir, Duration::from_secs(1)).start(),
        manager_store: Store::memory(),
        manager: None,
        nodes: (0..3)
            .map(|i| Node {
                name: format!("chaos-{i}"),
                store: Store::memory(),
                running: None,
            })
            .collect(),
        capacity: Resources {
            cpu: 1000.0,
            memory: 1 << 40,
            disk: 0,
        },
    };
    cluster.start_manager().await;
    for i in 0..3 {
        cluster.start_worker(i).await;
    }
    let mut acknowledged = Vec::new();
    for schedule in 0..schedules {
        let mut faults = Vec::new();
        for _ in 0..6 {
            let fault = match rng.below(10) {
                0..=2 => {
                    let mut task = Task::new(format!("c{}", acknowledged.len()), "sim/echo");
                    if rng.below(3) == 0 {
                        task.env = vec!["EXIT_CODE=0".into(), "EXIT_AFTER_MS=30".into()];
                    }
                    let id = task.id;
                    let submitted = cluster.manager().send(Submit(TaskEvent::run(task))).await;
                    if matches!(submitted, Ok(Ok(_))) {
                        acknowledged.push(id);
                    }
                    "submit".to_string()
                }
                3 | 4 => {
                    let i = rng.below(3) as usize;
                    if cluster.nodes[i].running.is_some() {
                        cluster.kill_worker(i);
                        format!("kill worker {i}")
                    } else {
                        cluster.start_worker(i).await;
                        format!("restart worker {i}")
                    }
                }
                5 | 6 => {
                    let running: Vec<String> = cluster
                        .engine
                        .containers()
                        .into_iter()
                        .filter(|c| c.3)
                        .map(|c| c.0)
                        .collect();
                    if running.is_empty() {
                        "no container to kill".to_string()
                    } else {
                        let c = &running[rng.below(running.len() as u64) as usize];
                        cluster.engine.exit(c, 137);
                        format!("container {} dies", &c[..8])
                    }
                }
                7 => {
                    cluster.kill_manager();
                    cluster.start_manager().await;
                    "restart the manager".to_string()
                }
                _ => {
                    let ms = rng.below(400);
                    actix_rt::time::sleep(Duration::from_millis(ms)).await;
                    format!("wait {ms} ms")
                }
            };
            faults.push(fault);
        }
        // Every worker back, then the cluster must settle.
        for i in 0..3 {
            if cluster.nodes[i].running.is_none() {
                cluster.start_worker(i).await;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match cluster.unsettled(&acknowledged).await {
                None => break,
                Some(why) if Instant::now() > deadline => panic!(
                    "chaos seed {seed}, schedule {schedule} ({faults:?}) never settled: {why}"
                ),
                Some(_) => actix_rt::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    println!(
        "chaos: {schedules} schedules, {} tasks acknowledged",
        acknowledged.len()
    );
}
