//! The periodic reconcile: the worker's tasks compared with what the runtime says.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use actix::prelude::*;

use super::Worker;
use super::exit::short;
use crate::runtime::{ContainerExited, ContainerStatus, Inspect, ListManaged, Remove, Stop};
use crate::task::{TaskId, TaskState};
use crate::telemetry::StopCause;

impl Worker {
    /// Compares the tasks with the runtime and applies what changed: Running tasks whose
    /// container ended, containers of finished tasks still running (a stop that failed half-way),
    /// containers of an older start or placement of a task, and containers this worker's store
    /// made that no task of it owns (removed once seen so for three reconcile intervals).
    pub(super) fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let running: Vec<(TaskId, String)> = self
            .tasks
            .values()
            .filter(|t| t.state() == TaskState::Running)
            .map(|t| (t.id, t.container_id.clone()))
            .collect();
        // What each settled task's current container is (a task still starting is left alone).
        let current: HashMap<TaskId, (String, bool)> = self
            .tasks
            .values()
            .filter(|t| t.state() != TaskState::Scheduled)
            .map(|t| (t.id, (t.container_id.clone(), t.is_finished())))
            .collect();
        let previous: HashSet<String> = self
            .tasks
            .values()
            .map(|t| t.previous_container_id.clone())
            .filter(|c| !c.is_empty())
            .collect();
        let known: HashSet<TaskId> = self.tasks.keys().copied().collect();
        let store = self.feed.epoch().to_string();
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        let telemetry = self.config.telemetry.clone();
        let fut = async move {
            let mut seen = Vec::new();
            let mut unowned = Vec::new();
            for (task_id, container_id) in running {
                let inspect = Inspect {
                    container_id: container_id.clone(),
                };
                match runtime.send(inspect).await {
                    Ok(Ok(info)) => seen.push((task_id, info)),
                    Ok(Err(e)) | Err(e) => {
                        log::warn!("reconcile: cannot inspect container {container_id}: {e}");
                        return (seen, None);
                    }
                }
            }
            if let Ok(Ok(managed)) = runtime.send(ListManaged).await {
                for c in managed {
                    if !c.task_id.is_some_and(|id| known.contains(&id)) {
                        // Only what this store's worker made: a container of another store
                        // (another cluster's worker of the same name) is left alone.
                        if c.store.as_deref() == Some(store.as_str()) {
                            unowned.push(c.id);
                        }
                        continue;
                    }
                    let Some((container, finished)) = c.task_id.and_then(|id| current.get(&id))
                    else {
                        continue;
                    };
                    if *container != c.id && !previous.contains(&c.id) {
                        log::info!("reconcile: removing {}, an old container", short(&c.id));
                        telemetry.stopped(StopCause::Stray);
                        let _ = runtime
                            .send(Stop {
                                container_id: c.id.clone(),
                                timeout,
                            })
                            .await;
                        let _ = runtime.send(Remove { container_id: c.id }).await;
                    } else if *finished && c.running {
                        log::info!("reconcile: stopping {} of a finished task", short(&c.id));
                        telemetry.stopped(StopCause::Stray);
                        let _ = runtime
                            .send(Stop {
                                container_id: c.id,
                                timeout,
                            })
                            .await;
                    }
                }
            }
            (seen, Some(unowned))
        };
        ctx.spawn(fut.into_actor(self).map(|(seen, unowned), act, ctx| {
            if let Some(unowned) = unowned {
                act.reap(unowned, ctx);
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

    /// Removes the containers of this worker's store that no task owns, once they have been
    /// seen so for three reconcile intervals (a container being created for a task is briefly
    /// unowned).
    fn reap(&mut self, unowned: Vec<String>, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.orphans.retain(|id, _| unowned.contains(id));
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
