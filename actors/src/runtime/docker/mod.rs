//! The Docker runtime actor.
//!
//! Architecture invariant: this module (with `engine.rs`) is the only one that uses bollard.
//!
//! Containers are created with Cube's labels (task id, name, placement, worker), the task's memory and
//! CPU limits, its environment and command, and its ports: fixed host ports where the task asks
//! for them, free ones otherwise. Docker's own restart policy is always `no`: Cube decides.

mod engine;

use std::collections::HashMap;
use std::sync::Arc;

use actix::prelude::*;
use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, LogsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::Mutex;

use engine::{connect, failed, inspect, is_status, remove, start, unavailable, watch};
pub use engine::{docker_available, echo_image_tar, import_image};

use super::{
    ContainerExited, ContainerInfo, Health, Inspect, LABEL_MANAGED, LABEL_PLACEMENT, LABEL_STORE,
    LABEL_TASK, LABEL_TASK_ID, LABEL_WORKER, ListManaged, Logs, ManagedContainer, Ping, Probe,
    Remove, RuntimeError, Start, Stop, Watch, task_from_label,
};

/// Runs tasks as containers on the local Docker engine.
pub struct DockerRuntime {
    /// The engine client, connected (and its API version negotiated) on first use, so that a
    /// worker starts even while the engine is down.
    client: Arc<Mutex<Option<Docker>>>,
    /// The worker these containers belong to (their `cube.worker` label).
    worker: String,
    /// The host address ports are published on.
    publish_ip: String,
    /// Who hears about containers that end on their own.
    exits: Recipient<ContainerExited>,
}

impl DockerRuntime {
    /// A runtime for `worker`, reporting exits to `exits`, publishing ports on `publish_ip`.
    pub fn new(worker: String, publish_ip: String, exits: Recipient<ContainerExited>) -> Self {
        DockerRuntime {
            client: Arc::new(Mutex::new(None)),
            worker,
            publish_ip,
            exits,
        }
    }

    fn client(&self) -> impl Future<Output = Result<Docker, RuntimeError>> + use<> {
        connect(Arc::clone(&self.client))
    }
}

impl Actor for DockerRuntime {
    type Context = Context<Self>;
}

/// Handler for [`Start`]: pull if needed, create, start, watch.
impl Handler<Start> for DockerRuntime {
    type Result = ResponseFuture<Result<ContainerInfo, RuntimeError>>;

    fn handle(&mut self, msg: Start, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        let (worker, publish_ip, exits) = (
            self.worker.clone(),
            self.publish_ip.clone(),
            self.exits.clone(),
        );
        Box::pin(async move {
            let docker = client.await?;
            let task_id = msg.task.id;
            let info = start(docker.clone(), msg.task, worker, publish_ip, msg.store).await?;
            actix::spawn(watch(docker, task_id, info.id.clone(), exits));
            Ok(info)
        })
    }
}

/// Handler for [`Ping`].
impl Handler<Ping> for DockerRuntime {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        Box::pin(async move {
            client.await?.ping().await.map_err(unavailable)?;
            Ok(())
        })
    }
}

/// Handler for [`Watch`].
impl Handler<Watch> for DockerRuntime {
    type Result = ();

    fn handle(&mut self, msg: Watch, _: &mut Context<Self>) {
        let client = self.client();
        let exits = self.exits.clone();
        actix::spawn(async move {
            match client.await {
                Ok(docker) => watch(docker, msg.task_id, msg.container_id, exits).await,
                Err(e) => log::warn!("cannot watch container {}: {e}", msg.container_id),
            }
        });
    }
}

/// Handler for [`Stop`]: SIGTERM, SIGKILL after the timeout, then remove.
impl Handler<Stop> for DockerRuntime {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    fn handle(&mut self, msg: Stop, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        Box::pin(async move {
            let docker = client.await?;
            let seconds = i32::try_from(msg.timeout.as_secs()).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::default().t(seconds).build();
            match docker
                .stop_container(&msg.container_id, Some(options))
                .await
            {
                // 304: it had already stopped; 404: it is gone.
                Ok(()) => Ok(()),
                Err(e) if is_status(&e, 304) || is_status(&e, 404) => Ok(()),
                Err(e) => Err(failed("stop container", e)),
            }
        })
    }
}

/// Handler for [`Probe`]: the check goes to the port published on `publish_ip`.
impl Handler<Probe> for DockerRuntime {
    type Result = ResponseFuture<Health>;

    fn handle(&mut self, msg: Probe, _: &mut Context<Self>) -> Self::Result {
        let host = self.publish_ip.clone();
        Box::pin(async move { super::health::probe(&msg.task, &host, msg.timeout).await })
    }
}

/// Handler for [`Remove`].
impl Handler<Remove> for DockerRuntime {
    type Result = ResponseFuture<Result<(), RuntimeError>>;

    fn handle(&mut self, msg: Remove, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        Box::pin(async move { remove(&client.await?, &msg.container_id).await })
    }
}

/// Handler for [`Inspect`].
impl Handler<Inspect> for DockerRuntime {
    type Result = ResponseFuture<Result<ContainerInfo, RuntimeError>>;

    fn handle(&mut self, msg: Inspect, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        Box::pin(async move { inspect(&client.await?, &msg.container_id).await })
    }
}

/// Handler for [`Logs`].
impl Handler<Logs> for DockerRuntime {
    type Result = ResponseFuture<Result<String, RuntimeError>>;

    fn handle(&mut self, msg: Logs, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        Box::pin(async move {
            let docker = client.await?;
            let mut options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .timestamps(msg.query.timestamps)
                .tail(&msg.query.tail.to_string());
            if let Some(since) = msg.query.since {
                options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
            }
            let options = options.build();
            let mut stream = docker.logs(&msg.container_id, Some(options));
            let mut text = String::new();
            while let Some(chunk) = stream.next().await {
                text.push_str(&chunk.map_err(|e| failed("read logs", e))?.to_string());
            }
            Ok(text)
        })
    }
}

/// Handler for [`ListManaged`]: containers labelled with this worker's name.
impl Handler<ListManaged> for DockerRuntime {
    type Result = ResponseFuture<Result<Vec<ManagedContainer>, RuntimeError>>;

    fn handle(&mut self, msg: ListManaged, _: &mut Context<Self>) -> Self::Result {
        let client = self.client();
        let worker = self.worker.clone();
        Box::pin(async move {
            let docker = client.await?;
            let filters = HashMap::from([(
                "label",
                vec![
                    format!("{LABEL_MANAGED}=true"),
                    format!("{LABEL_WORKER}={worker}"),
                ],
            )]);
            let options = ListContainersOptionsBuilder::default()
                .all(msg.all)
                .filters(&filters)
                .build();
            let containers = docker
                .list_containers(Some(options))
                .await
                .map_err(|e| failed("list containers", e))?;
            Ok(containers
                .into_iter()
                .filter_map(|c| {
                    let labels = c.labels.as_ref()?;
                    let task_id = labels.get(LABEL_TASK_ID)?.parse().ok();
                    let placement = labels.get(LABEL_PLACEMENT).and_then(|p| p.parse().ok());
                    let running = c.state.map(|s| s.to_string()) == Some("running".into());
                    // What adoption needs, read for running containers only.
                    let task = labels
                        .get(LABEL_TASK)
                        .filter(|_| running && msg.tasks)
                        .and_then(|t| task_from_label(t));
                    let store = labels.get(LABEL_STORE).cloned();
                    Some(ManagedContainer {
                        id: c.id?,
                        task_id,
                        placement,
                        task,
                        store,
                        running,
                    })
                })
                .collect())
        })
    }
}
