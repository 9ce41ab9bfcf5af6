//! Health checks of running tasks: every `interval`, each Running task with a check that is past
//! its start grace is probed through the runtime; `failures` failed checks in a row make it
//! unhealthy: its container is stopped and the task fails, or is restarted by its policy.

use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;

use super::Worker;
use crate::runtime::{Health, Probe, Stop};
use crate::task::{TaskId, TaskState};
use crate::telemetry::StopCause;

/// When and how a worker checks its tasks' health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// How often each task is checked.
    pub interval: Duration,
    /// How long one check may take.
    pub timeout: Duration,
    /// How long after its start a task is left alone.
    pub grace: Duration,
    /// Failed checks in a row that make a task unhealthy.
    pub failures: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            grace: Duration::from_secs(5),
            failures: 3,
        }
    }
}

impl Worker {
    /// Checks every Running task that has a health check and is past its grace.
    /// Starts the health tick if a Running task has a check: each task is then checked on its
    /// own interval (the worker's, or its check's own).
    pub(super) fn ensure_health_tick(&mut self, ctx: &mut Context<Self>) {
        if self.health_tick.is_none() && !self.checked.is_empty() {
            let tick = self.config.health.interval.min(Duration::from_millis(100));
            self.health_tick = Some(ctx.run_interval(tick, |act, ctx| act.check_health(ctx)));
        }
    }

    pub(super) fn check_health(&mut self, ctx: &mut Context<Self>) {
        let tasks = &self.tasks;
        self.checked.retain(|id| {
            tasks
                .get(id)
                .is_some_and(|t| t.state() == TaskState::Running && !t.health_check.is_empty())
        });
        if self.checked.is_empty() {
            if let Some(tick) = self.health_tick.take() {
                ctx.cancel_future(tick);
            }
            self.last_probe.clear();
            return;
        }
        let d = self.config.health;
        let defaults = (d.interval, d.timeout, d.grace, d.failures);
        let now = Utc::now();
        let instant = std::time::Instant::now();
        let tasks = &self.tasks;
        self.last_probe.retain(|id, _| {
            tasks
                .get(id)
                .is_some_and(|t| t.state() == TaskState::Running)
        });
        let mut due = Vec::new();
        for task in self.checked.iter().filter_map(|id| self.tasks.get(id)) {
            if self.probing.contains(&task.id) {
                continue;
            }
            let (interval, timeout, grace, failures) = task.health_check.settings(defaults);
            let grace = chrono::Duration::from_std(grace).unwrap_or_default();
            let started = task.start_time.is_none_or(|s| now - s >= grace);
            let last = self.last_probe.get(&task.id);
            if started && last.is_none_or(|l| instant.duration_since(*l) >= interval) {
                due.push((task.clone(), timeout, failures));
            }
        }
        for (task, timeout, threshold) in due {
            let (id, container) = (task.id, task.container_id.clone());
            self.probing.insert(id);
            self.last_probe.insert(id, instant);
            let runtime = self.runtime.clone();
            let probe = Probe { task, timeout };
            let fut = async move { runtime.send(probe).await };
            ctx.spawn(fut.into_actor(self).map(move |health, act, ctx| {
                act.probing.remove(&id);
                let current = act.tasks.get(&id).is_some_and(|t| {
                    t.state() == TaskState::Running && t.container_id == container
                });
                if !current {
                    return;
                }
                match health {
                    Ok(Health::Healthy) => {
                        act.config.telemetry.checked(Some(true));
                        act.health_failures.remove(&id);
                    }
                    Ok(Health::Unhealthy(why)) => {
                        act.config.telemetry.checked(Some(false));
                        let failed = act.health_failures.entry(id).or_default();
                        *failed += 1;
                        log::info!("task {id}: health check failed ({failed} in a row): {why}");
                        if *failed >= threshold {
                            let reason = format!("unhealthy: {why} ({failed} checks in a row)");
                            act.health_failures.remove(&id);
                            act.unhealthy(id, reason, ctx);
                        }
                    }
                    Err(e) => {
                        act.config.telemetry.checked(None);
                        log::warn!("task {id}: health check not run: {e}");
                    }
                }
            }));
        }
    }

    /// Stops the container of an unhealthy task; the task then fails, or is restarted by its
    /// policy, with `reason`.
    fn unhealthy(&mut self, id: TaskId, reason: String, ctx: &mut Context<Self>) {
        self.config.telemetry.stopped(StopCause::Unhealthy);
        self.stop_container_then(id, ctx, move |act, task, container_id, ctx| {
            if task.state() == TaskState::Running && task.container_id == container_id {
                act.ended(task, TaskState::Failed, reason, None, ctx);
            }
        });
    }

    /// Stops task `id`'s current container (its end is not an event meanwhile), then calls
    /// `then` with the task as it is by then and the container that was stopped.
    fn stop_container_then(
        &mut self,
        id: TaskId,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Worker, crate::task::Task, String, &mut Context<Self>) + 'static,
    ) {
        let Some(task) = self.tasks.get(&id) else {
            return;
        };
        let container_id = task.container_id.clone();
        let runtime = self.runtime.clone();
        let timeout = self.config.stop_timeout;
        self.stopping.insert(id);
        let stop = Stop {
            container_id: container_id.clone(),
            timeout,
        };
        let fut = async move {
            if stop.container_id.is_empty() {
                return Ok(Ok(()));
            }
            runtime.send(stop).await
        };
        ctx.spawn(fut.into_actor(self).map(move |stopped, act, ctx| {
            act.stopping.remove(&id);
            if let Ok(Err(e)) | Err(e) = stopped {
                log::warn!("task {id}: could not stop its container: {e}");
            }
            if let Some(task) = act.tasks.get(&id).cloned() {
                then(act, task, container_id, ctx);
            }
        }));
    }

    /// With `stop_after_disconnect`: once no manager has synced for `after`, every active task
    /// is stopped and Failed with the reason (so a manager that comes back may place it again).
    pub(super) fn stop_if_disconnected(&mut self, after: Duration, ctx: &mut Context<Self>) {
        let Some(last) = self.last_sync else {
            return;
        };
        // The manager asks for metrics every `poll_interval`, and for the feed all the time.
        if last.elapsed() < after {
            return;
        }
        let active: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.state().is_active())
            .map(|t| t.id)
            .collect();
        for id in active {
            let reason = format!(
                "stopped: no word from the manager for {}s (stop_after_disconnect)",
                after.as_secs_f64()
            );
            log::warn!("task {id}: {reason}");
            self.stop_for(id, reason, ctx);
        }
    }

    /// Stops task `id`'s container and fails the task with `reason`, without a restart.
    fn stop_for(&mut self, id: TaskId, reason: String, ctx: &mut Context<Self>) {
        self.config.telemetry.stopped(StopCause::Task);
        self.stop_container_then(id, ctx, move |act, mut task, _, ctx| {
            if task.state().is_active() && task.transition(TaskState::Failed, reason).is_ok() {
                task.host_ports.clear();
                act.record(task, ctx);
            }
        });
    }
}
