//! The periodic reconcile: the worker's tasks compared with what the runtime says.

use std::collections::HashSet;
use std::time::Instant;

use actix::prelude::*;

use super::Worker;
use super::exit::short;
use crate::runtime::{
    ContainerExited, ContainerStatus, Inspect, ListManaged, ManagedContainer, Remove, Stop,
};
use crate::task::{TaskId, TaskState};
use crate::telemetry::StopCause;

/// Every how many reconciles the stopped containers are listed too.
const FULL_LISTING_EVERY: u64 = 10;

/// How many reconciles a node's cycle of full listings is shifted by: a random one of
/// [`FULL_LISTING_EVERY`].
fn listing_offset() -> u64 {
    super::random_below(FULL_LISTING_EVERY)
}

impl Worker {
    /// Puts this worker's listings of stopped containers at a point of its own in the cycle of
    /// [`FULL_LISTING_EVERY`] reconciles. They cost what the worker keeps (a container per
    /// finished task), and the nodes of one process start together: without this, a thousand
    /// nodes list theirs within the same reconcile interval, every cycle, and what they were
    /// starting waits behind them.
    pub(super) fn stagger_full_listings(&mut self) {
        self.reconciles += listing_offset();
    }

    /// Compares the tasks with the runtime and applies what changed: Running tasks whose
    /// container ended, containers of finished tasks still running (a stop that failed half-way),
    /// containers of an older start or placement of a task, and containers this worker's store
    /// made that no task of it owns (removed once seen so for three reconcile intervals).
    pub(super) fn reconcile(&mut self, ctx: &mut Context<Self>) {
        // Each running task's container, and whether the node has still to learn its host ports.
        let running: Vec<(TaskId, String, bool)> = self
            .tasks
            .active()
            .filter(|t| t.state() == TaskState::Running)
            .map(|t| {
                let ports_unknown = !t.exposed_ports.is_empty() && t.host_ports.is_empty();
                (t.id, t.container_id.clone(), ports_unknown)
            })
            .collect();
        // The running containers every time; the stopped ones too (kept with finished tasks,
        // as many as the history) only every few times, so that a reconcile costs what runs.
        let all = self.reconciles.is_multiple_of(FULL_LISTING_EVERY);
        self.reconciles += 1;
        let runtime = self.runtime.clone();
        let fut = async move {
            let listing = ListManaged { all, tasks: false };
            let managed = match runtime.send(listing).await {
                Ok(Ok(managed)) => Some(managed),
                _ => None,
            };
            // A container the listing shows running needs no inspection, unless its ports are
            // still to be learned: only the others are asked about, one by one (what ended,
            // and how).
            let up: HashSet<&str> = managed
                .iter()
                .flatten()
                .filter(|c| c.running)
                .map(|c| c.id.as_str())
                .collect();
            let mut seen = Vec::new();
            for (task_id, container_id, ports_unknown) in running {
                if up.contains(container_id.as_str()) && !ports_unknown {
                    continue;
                }
                let inspect = Inspect {
                    container_id: container_id.clone(),
                };
                match runtime.send(inspect).await {
                    Ok(Ok(info)) => seen.push((task_id, info)),
                    Ok(Err(e)) | Err(e) => {
                        log::warn!("reconcile: cannot inspect container {container_id}: {e}");
                        break;
                    }
                }
            }
            (seen, managed)
        };
        ctx.spawn(fut.into_actor(self).map(move |(seen, managed), act, ctx| {
            if let Some(managed) = managed {
                act.sort_out(managed, all, ctx);
            }
            for (task_id, info) in seen {
                match info.status {
                    ContainerStatus::Running | ContainerStatus::Waiting { .. } => {
                        if let Some(task) = act.tasks.get(&task_id)
                            && task.container_id == info.id
                            && !info.host_ports.is_empty()
                            && task.host_ports != info.host_ports
                        {
                            let mut task = task.clone();
                            task.host_ports = info.host_ports;
                            act.record(task, ctx);
                        }
                    }
                    status => act.container_ended(
                        ContainerExited {
                            task_id,
                            container_id: info.id,
                            status,
                        },
                        ctx,
                    ),
                }
            }
        }));
    }

    /// Compares the containers the runtime lists (`all`: stopped ones too) with the tasks:
    /// stops and removes the containers of an older start or placement, stops the running
    /// containers of finished tasks, and reaps those no task owns.
    fn sort_out(&mut self, managed: Vec<ManagedContainer>, all: bool, ctx: &mut Context<Self>) {
        let store = self.feed.epoch().to_string();
        let mut unowned = Vec::new();
        let mut stale = Vec::new();
        let mut stop = Vec::new();
        for c in managed {
            let Some(task) = c.task_id.and_then(|id| self.tasks.get(&id)) else {
                // Only what this store's worker made: a container of another store (another
                // cluster's worker of the same name) is left alone.
                if c.store.as_deref() == Some(store.as_str()) {
                    unowned.push(c.id);
                }
                continue;
            };
            if task.state() == TaskState::Scheduled {
                // Still starting: its container may be the one being made.
                continue;
            }
            if task.container_id != c.id && task.previous_container_id != c.id {
                log::info!("reconcile: removing {}, an old container", short(&c.id));
                stale.push(c.id);
            } else if task.is_finished() && c.running {
                log::info!("reconcile: stopping {} of a finished task", short(&c.id));
                stop.push(c.id);
            }
        }
        self.reap(unowned, all, ctx);
        if stale.is_empty() && stop.is_empty() {
            return;
        }
        for _ in stale.iter().chain(&stop) {
            self.config.telemetry.stopped(StopCause::Stray);
        }
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        ctx.spawn(
            async move {
                for (container_id, remove) in stale
                    .into_iter()
                    .map(|c| (c, true))
                    .chain(stop.into_iter().map(|c| (c, false)))
                {
                    let stop = Stop {
                        container_id: container_id.clone(),
                        timeout,
                    };
                    let _ = runtime.send(stop).await;
                    if remove {
                        let _ = runtime.send(Remove { container_id }).await;
                    }
                }
            }
            .into_actor(self),
        );
    }

    /// Removes the containers of this worker's store that no task owns, once they have been
    /// seen so for three reconcile intervals (a container being created for a task is briefly
    /// unowned).
    /// With `all` false only running containers were listed: the stopped orphans seen before
    /// are kept until the next listing of all.
    fn reap(&mut self, unowned: Vec<String>, all: bool, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if all {
            self.orphans.retain(|id, _| unowned.contains(id));
        }
        let mut doomed = Vec::new();
        for id in unowned {
            let first_seen = *self.orphans.entry(id.clone()).or_insert(now);
            if now.duration_since(first_seen) >= self.config.reconcile_interval * 3 {
                doomed.push(id);
            }
        }
        if doomed.is_empty() {
            return;
        }
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        for id in &doomed {
            self.config.telemetry.stopped(StopCause::Stray);
            self.orphans.remove(id);
            log::warn!(
                "reconcile: removing container {}: no task of this worker owns it",
                short(id)
            );
        }
        ctx.spawn(
            async move {
                for container_id in doomed {
                    let stop = Stop {
                        container_id: container_id.clone(),
                        timeout,
                    };
                    let _ = runtime.send(stop).await;
                    let _ = runtime.send(Remove { container_id }).await;
                }
            }
            .into_actor(self),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thousand nodes' full listings spread over the whole cycle, about a tenth at each point.
    #[test]
    fn a_thousand_nodes_spread_their_full_listings_over_the_cycle() {
        let mut at = [0u32; FULL_LISTING_EVERY as usize];
        for _ in 0..1000 {
            at[listing_offset() as usize] += 1;
        }
        // 100 expected at each point; 50 and 150 are five standard deviations away.
        assert!(at.iter().all(|n| (50..=150).contains(n)), "{at:?}");
    }

    /// A container that ends with nothing reported (a lost exit event) is found by the next
    /// reconcile, since the running listing no longer shows it: the task fails with the
    /// container's exit code. One still running is left alone.
    #[actix_rt::test]
    async fn a_reconcile_finds_a_container_that_ended_unreported() {
        use crate::runtime::SimEngine;
        use crate::store::Store;
        use crate::task::Task;
        use crate::worker::{GetTask, RunTask, RuntimeKind, WorkerConfig};
        use std::time::Duration;

        let engine = SimEngine::default();
        let capacity = crate::resources::Resources {
            cpu: 4.0,
            memory: 1 << 30,
            disk: 0,
        };
        let config = WorkerConfig::test_node("reconciled", capacity, 0);
        let runtime = RuntimeKind::Sim {
            known_images: None,
            engine: Some(engine.clone()),
        };
        let worker = Worker::start(config, Store::memory(), runtime, None)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for name in ["ends", "runs"] {
            let task = Task::new(name, "img");
            ids.push(worker.send(RunTask(task)).await.unwrap().unwrap().id);
        }
        let state = |id| {
            let worker = worker.clone();
            async move {
                let detail = worker.send(GetTask(id)).await.unwrap().unwrap();
                (
                    detail.task.state(),
                    detail.task.container_id.clone(),
                    detail.task.exit_code,
                )
            }
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut containers = Vec::new();
        for id in &ids {
            loop {
                let (now, container, _) = state(*id).await;
                if now == TaskState::Running {
                    containers.push(container);
                    break;
                }
                assert!(Instant::now() < deadline, "the task never ran: {now:?}");
                actix_rt::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(engine.exit(&containers[0], 3));
        loop {
            let (now, _, code) = state(ids[0]).await;
            if now == TaskState::Failed {
                assert_eq!(code, Some(3));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the ended container was never noticed"
            );
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
        // Several reconciles later, the other still runs.
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(state(ids[1]).await.0, TaskState::Running);
    }
}
