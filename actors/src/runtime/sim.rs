//! The simulated runtime: containers that exist only in this actor's memory.
//!
//! A simulated container "runs" until it is stopped, or until the exit its task asks for through
//! `EXIT_CODE` / `EXIT_AFTER_MS` (the same variables the echo test program reads). A task with
//! `SIM_START_ERROR=<text>` fails to start with that text. Ports are given out from a counter;
//! nothing listens on them. When the runtime is given a set of known images, any other image is
//! "not pullable", as on a node with no registry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    ContainerExited, ContainerInfo, ContainerStatus, Inspect, ListManaged, Logs, ManagedContainer,
    Ping, Probe, Remove, RuntimeError, Start, Stop, Watch, container_name, requested_exit,
};
use crate::task::{PortBinding, Task, TaskId, parse_port_spec};

/// One simulated container.
pub struct SimContainer {
    task_id: TaskId,
    placement: u64,
    task: Task,
    store: String,
    info: ContainerInfo,
    logs: Vec<(DateTime<Utc>, String)>,
}

impl SimContainer {
    fn is_running(&self) -> bool {
        self.info.status == ContainerStatus::Running
    }

    /// Ends the container with `code` if it runs, as if its process ended, noting `why` in its
    /// logs; false if it was not running.
    fn end(&mut self, code: i64, why: String) -> bool {
        if self.info.status != ContainerStatus::Running {
            return false;
        }
        self.info.status = ContainerStatus::Exited {
            code,
            oom_killed: false,
            error: String::new(),
        };
        self.logs.push((Utc::now(), why));
        true
    }
}

/// The simulated engine's containers, by id: shared by the runtimes that use it, and outliving
/// them, as a Docker engine outlives the workers that use it (see [`SimRuntime::with_engine`]).
/// Each in a box (see [`crate::task::TaskMap`]): a node keeps a container per finished task, the
/// nodes of a `cube up` fill evenly, and a thousand maps of inline containers doubling within
/// the same seconds held the nodes' thread.
#[derive(Clone, Default)]
pub struct SimEngine(Arc<Mutex<Containers>>);

/// The containers of an engine, by id, and which may run: a listing of the running ones costs
/// what runs, not every container kept for a finished task.
#[derive(Default)]
struct Containers {
    by_id: HashMap<String, Box<SimContainer>>,
    /// The containers started and not yet seen ended (a listing drops those that ended).
    started: HashSet<String>,
}

impl std::ops::Deref for Containers {
    type Target = HashMap<String, Box<SimContainer>>;

    fn deref(&self) -> &Self::Target {
        &self.by_id
    }
}

impl std::ops::DerefMut for Containers {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.by_id
    }
}

impl SimEngine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Containers> {
        // A panic while holding the lock leaves whole containers behind: still consistent.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every container: its id, its task, the store that started it, and whether it runs.
    pub fn containers(&self) -> Vec<(String, TaskId, String, bool)> {
        self.lock()
            .iter()
            .map(|(id, c)| {
                let running = c.info.status == ContainerStatus::Running;
                (id.clone(), c.task_id, c.store.clone(), running)
            })
            .collect()
    }

    /// Makes a running container exit with `code`, as if its process ended; its worker learns
    /// of it at its next reconcile. Returns whether there was such a running container.
    pub fn exit(&self, container_id: &str, code: i64) -> bool {
        self.lock()
            .get_mut(container_id)
            .is_some_and(|c| c.end(code, format!("killed with code {code}")))
    }
}

impl std::fmt::Debug for SimEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimEngine({} containers)", self.lock().len())
    }
}

impl PartialEq for SimEngine {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SimEngine {}

/// Runs tasks in memory.
pub struct SimRuntime {
    /// Every container, by id, until removed.
    containers: SimEngine,
    /// Images that exist; `None` means every image exists.
    known_images: Option<HashSet<String>>,
    /// Who hears about containers that end on their own.
    exits: Recipient<ContainerExited>,
}

impl SimRuntime {
    /// A simulated runtime reporting exits to `exits`. With `known_images`, only those images exist.
    pub fn new(exits: Recipient<ContainerExited>, known_images: Option<HashSet<String>>) -> Self {
        SimRuntime::with_engine(exits, known_images, SimEngine::default())
    }

    /// The same, on `engine`, which may be shared and outlive this runtime.
    pub fn with_engine(
        exits: Recipient<ContainerExited>,
        known_images: Option<HashSet<String>>,
        engine: SimEngine,
    ) -> Self {
        SimRuntime {
            containers: engine,
            known_images,
            exits,
        }
    }

    /// A host port not given out before in this process (simulated nodes share one machine).
    fn port(&mut self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        (40000 + NEXT.fetch_add(1, Ordering::Relaxed) % 25000).to_string()
    }
}

impl Actor for SimRuntime {
    type Context = Context<Self>;
}

/// Handler for [`Start`].
impl Handler<Start> for SimRuntime {
    type Result = Result<ContainerInfo, RuntimeError>;

    fn handle(&mut self, msg: Start, _: &mut Context<Self>) -> Self::Result {
        let (task, store) = (msg.task, msg.store);
        if let Some(known) = &self.known_images
            && !known.contains(&task.image)
        {
            return Err(RuntimeError::ImageUnavailable {
                image: task.image.clone(),
                reason: "not on this node and the pull failed: no registry reachable (simulated)"
                    .into(),
            });
        }
        if let Some(reason) = task.env_var("SIM_START_ERROR") {
            return Err(RuntimeError::Failed {
                operation: "start container",
                reason: reason.to_string(),
            });
        }
        let mut host_ports = BTreeMap::new();
        for spec in task.exposed_ports.keys() {
            if parse_port_spec(spec).is_none() {
                continue;
            }
            let host_port = match task.port_bindings.get(spec) {
                Some(p) if !p.is_empty() => p.clone(),
                _ => self.port(),
            };
            host_ports.insert(
                spec.clone(),
                vec![PortBinding {
                    host_ip: "0.0.0.0".into(),
                    host_port,
                }],
            );
        }
        let id = Uuid::new_v4().simple().to_string();
        let info = ContainerInfo {
            id: id.clone(),
            name: container_name(&task),
            status: ContainerStatus::Running,
            host_ports,
            started_at: Some(Utc::now()),
        };
        if let Some((code, after)) = requested_exit(&task) {
            // A timer of its own, not one parked on this actor's context: actix polls every
            // future parked on a context at each of its wake-ups, and a busy node runs dozens
            // of tasks. The engine's container exits even if this runtime has stopped, as a
            // Docker container outlives its worker.
            let (engine, exits, container_id) =
                (self.containers.clone(), self.exits.clone(), id.clone());
            actix::spawn(async move {
                actix::clock::sleep(after).await;
                let exited = engine.lock().get_mut(&container_id).and_then(|c| {
                    c.end(code, format!("exiting with code {code} as asked"))
                        .then(|| ContainerExited {
                            task_id: c.task_id,
                            container_id: container_id.clone(),
                            status: c.info.status.clone(),
                        })
                });
                if let Some(exited) = exited {
                    exits.do_send(exited);
                }
            });
        }
        let mut containers = self.containers.lock();
        containers.started.insert(id.clone());
        containers.insert(
            id,
            Box::new(SimContainer {
                task_id: task.id,
                placement: task.placement,
                task: task.clone(),
                store,
                info: info.clone(),
                logs: vec![(
                    Utc::now(),
                    format!(
                        "simulated container for task {} ({}) started",
                        task.name, task.image
                    ),
                )],
            }),
        );
        Ok(info)
    }
}

/// Handler for [`Stop`]: the container is gone at once.
impl Handler<Stop> for SimRuntime {
    type Result = Result<(), RuntimeError>;

    fn handle(&mut self, msg: Stop, _: &mut Context<Self>) -> Self::Result {
        if let Some(c) = self.containers.lock().get_mut(&msg.container_id)
            && c.info.status == ContainerStatus::Running
        {
            c.info.status = ContainerStatus::Exited {
                code: 0,
                oom_killed: false,
                error: String::new(),
            };
            c.logs.push((Utc::now(), "stopped".into()));
        }
        Ok(())
    }
}

/// Handler for [`Probe`]: simulated (see [`super::health::simulated`]).
impl Handler<Probe> for SimRuntime {
    type Result = MessageResult<Probe>;

    fn handle(&mut self, msg: Probe, _: &mut Context<Self>) -> Self::Result {
        let started = self
            .containers
            .lock()
            .get(&msg.task.container_id)
            .and_then(|c| c.info.started_at);
        let running_for = started
            .and_then(|t| (Utc::now() - t).to_std().ok())
            .unwrap_or_default();
        MessageResult(super::health::simulated(&msg.task, running_for))
    }
}

/// Handler for [`Remove`].
impl Handler<Remove> for SimRuntime {
    type Result = Result<(), RuntimeError>;

    fn handle(&mut self, msg: Remove, _: &mut Context<Self>) -> Self::Result {
        let mut containers = self.containers.lock();
        containers.started.remove(&msg.container_id);
        containers.remove(&msg.container_id);
        Ok(())
    }
}

/// Handler for [`Inspect`].
impl Handler<Inspect> for SimRuntime {
    type Result = Result<ContainerInfo, RuntimeError>;

    fn handle(&mut self, msg: Inspect, _: &mut Context<Self>) -> Self::Result {
        Ok(match self.containers.lock().get(&msg.container_id) {
            Some(c) => c.info.clone(),
            None => ContainerInfo {
                id: msg.container_id,
                name: String::new(),
                status: ContainerStatus::Missing,
                host_ports: BTreeMap::new(),
                started_at: None,
            },
        })
    }
}

/// Handler for [`Logs`].
impl Handler<Logs> for SimRuntime {
    type Result = Result<String, RuntimeError>;

    fn handle(&mut self, msg: Logs, _: &mut Context<Self>) -> Self::Result {
        let engine = self.containers.lock();
        let c = engine
            .get(&msg.container_id)
            .ok_or_else(|| RuntimeError::Failed {
                operation: "read logs",
                reason: format!("no such container: {}", msg.container_id),
            })?;
        let since = msg.query.since.unwrap_or(i64::MIN);
        let lines: Vec<&(DateTime<Utc>, String)> = c
            .logs
            .iter()
            .filter(|(t, _)| t.timestamp() >= since)
            .collect();
        let skip = lines.len().saturating_sub(msg.query.tail);
        Ok(lines[skip..]
            .iter()
            .map(|(t, l)| match msg.query.timestamps {
                true => format!(
                    "{} {l}\n",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                ),
                false => format!("{l}\n"),
            })
            .collect())
    }
}

/// Handler for [`ListManaged`].
impl Handler<ListManaged> for SimRuntime {
    type Result = Result<Vec<ManagedContainer>, RuntimeError>;

    fn handle(&mut self, msg: ListManaged, _: &mut Context<Self>) -> Self::Result {
        let mut containers = self.containers.lock();
        if msg.all {
            return Ok(containers
                .iter()
                .map(|(id, c)| managed(id, c, msg.tasks))
                .collect());
        }
        // The running ones only: those started, less those that ended since.
        let Containers { by_id, started } = &mut *containers;
        started.retain(|id| by_id.get(id).is_some_and(|c| c.is_running()));
        Ok(started
            .iter()
            .filter_map(|id| by_id.get(id).map(|c| managed(id, c, msg.tasks)))
            .collect())
    }
}

/// A container as [`ListManaged`] lists it.
fn managed(id: &str, c: &SimContainer, tasks: bool) -> ManagedContainer {
    ManagedContainer {
        id: id.to_string(),
        task_id: Some(c.task_id),
        placement: Some(c.placement),
        // What adoption needs, for running containers only (a listing of all would otherwise
        // copy every finished task the node keeps).
        task: (tasks && c.is_running()).then(|| c.task.clone()),
        store: Some(c.store.clone()),
        running: c.is_running(),
    }
}

/// Handler for [`Ping`]: a simulated engine always answers.
impl Handler<Ping> for SimRuntime {
    type Result = Result<(), RuntimeError>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        Ok(())
    }
}

/// Handler for [`Watch`]: simulated exits are always reported, so there is nothing to do.
impl Handler<Watch> for SimRuntime {
    type Result = ();

    fn handle(&mut self, _: Watch, _: &mut Context<Self>) {}
}
