//! The engine calls behind the Docker runtime actor: connecting, images, creating, starting,
//! inspecting, watching and removing containers, and importing the test image.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, PortBinding as DockerPortBinding,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::runtime::{
    ContainerExited, ContainerInfo, ContainerStatus, LABEL_MANAGED, LABEL_PLACEMENT, LABEL_STORE,
    LABEL_TASK, LABEL_TASK_ID, LABEL_TASK_NAME, LABEL_WORKER, RuntimeError, container_name,
};
use crate::task::{PortBinding, Task, TaskId, parse_port_spec};

/// Returns the shared client, connecting and negotiating the API version if not done yet.
pub(super) async fn connect(slot: Arc<Mutex<Option<Docker>>>) -> Result<Docker, RuntimeError> {
    let mut slot = slot.lock().await;
    if let Some(docker) = slot.as_ref() {
        return Ok(docker.clone());
    }
    let docker = Docker::connect_with_local_defaults().map_err(unavailable)?;
    let docker = docker.negotiate_version().await.map_err(unavailable)?;
    *slot = Some(docker.clone());
    Ok(docker)
}

pub(super) fn unavailable(e: DockerError) -> RuntimeError {
    RuntimeError::Unavailable {
        reason: e.to_string(),
    }
}

/// Maps an engine error: transport problems mean the engine is unreachable.
pub(super) fn failed(operation: &'static str, e: DockerError) -> RuntimeError {
    match e {
        DockerError::DockerResponseServerError { message, .. } => RuntimeError::Failed {
            operation,
            reason: message,
        },
        DockerError::DockerContainerWaitError { error, code } => RuntimeError::Failed {
            operation,
            reason: format!("exit {code}: {error}"),
        },
        other => unavailable(other),
    }
}

pub(super) fn is_status(e: &DockerError, status: u16) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code, .. } if *status_code == status)
}

/// Makes sure `image` is on the engine, pulling it if not.
pub(super) async fn ensure_image(docker: &Docker, image: &str) -> Result<(), RuntimeError> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(failed("inspect image", e)),
    }
    let options = CreateImageOptionsBuilder::default()
        .from_image(image)
        .build();
    let mut pull = docker.create_image(Some(options), None, None);
    while let Some(progress) = pull.next().await {
        if let Err(e) = progress {
            let reason = match e {
                DockerError::DockerResponseServerError { message, .. } => message,
                DockerError::DockerStreamError { error } => error,
                other => return Err(unavailable(other)),
            };
            return Err(RuntimeError::ImageUnavailable {
                image: image.to_string(),
                reason: format!("not on this node and the pull failed: {reason}"),
            });
        }
    }
    Ok(())
}

pub(super) fn create_body(
    task: &Task,
    worker: &str,
    publish_ip: &str,
    store: &str,
) -> ContainerCreateBody {
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_TASK_ID.to_string(), task.id.to_string()),
        (LABEL_PLACEMENT.to_string(), task.placement.to_string()),
        (LABEL_TASK_NAME.to_string(), task.name.clone()),
        (LABEL_WORKER.to_string(), worker.to_string()),
        (LABEL_STORE.to_string(), store.to_string()),
        (
            LABEL_TASK.to_string(),
            serde_json::to_string(task).unwrap_or_default(),
        ),
    ]);
    let mut port_bindings = HashMap::new();
    let mut exposed = Vec::new();
    for spec in task.exposed_ports.keys() {
        let Some((port, proto)) = parse_port_spec(spec) else {
            continue;
        };
        let key = format!("{port}/{proto}");
        let host_port = task.port_bindings.get(spec).cloned().unwrap_or_default();
        port_bindings.insert(
            key.clone(),
            Some(vec![DockerPortBinding {
                host_ip: Some(publish_ip.to_string()),
                host_port: Some(host_port),
            }]),
        );
        exposed.push(key);
    }
    let host_config = HostConfig {
        memory: (task.memory > 0).then(|| i64::try_from(task.memory).unwrap_or(i64::MAX)),
        nano_cpus: (task.cpu > 0.0).then(|| (task.cpu * 1e9).round() as i64),
        port_bindings: Some(port_bindings),
        restart_policy: Some(DockerRestartPolicy {
            name: Some(RestartPolicyNameEnum::NO),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(task.image.clone()),
        env: Some(task.env.clone()),
        cmd: (!task.cmd.is_empty()).then(|| task.cmd.clone()),
        labels: Some(labels),
        exposed_ports: Some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    }
}

pub(super) async fn start(
    docker: Docker,
    task: Task,
    worker: String,
    publish_ip: String,
    store: String,
) -> Result<ContainerInfo, RuntimeError> {
    let name = container_name(&task);
    let body = create_body(&task, &worker, &publish_ip, &store);
    // Create first, as `docker run` does: the image check and the clean-up of a leftover
    // container only happen when the engine says they are needed (two calls fewer per start).
    let mut pulled = false;
    let mut cleared = false;
    let created = loop {
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        match docker.create_container(Some(options), body.clone()).await {
            Ok(created) => break created,
            // No such image here: pull it, then create again.
            Err(e) if is_status(&e, 404) && !pulled => {
                ensure_image(&docker, &task.image).await?;
                pulled = true;
            }
            // A container left by an earlier attempt of this same task holds the name.
            Err(e) if is_status(&e, 409) && !cleared => {
                remove_quietly(&docker, &name).await;
                cleared = true;
            }
            Err(e) => return Err(failed("create container", e)),
        }
    };
    if let Err(e) = docker.start_container(&created.id, None).await {
        remove_quietly(&docker, &created.id).await;
        return Err(failed("start container", e));
    }
    inspect(&docker, &created.id).await
}

/// Removes a container by force, ignoring "no such container".
pub(super) async fn remove_quietly(docker: &Docker, id: &str) {
    if let Err(e) = remove(docker, id).await {
        log::warn!("removing container {id}: {e}");
    }
}

/// Removes a container by force with its anonymous volumes; one already gone (404) or being
/// removed (409) is not an error.
pub(super) async fn remove(docker: &Docker, id: &str) -> Result<(), RuntimeError> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(failed("remove container", e)),
    }
}

pub(super) fn parse_time(t: Option<String>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| t.timestamp() > 0)
}

pub(super) async fn inspect(docker: &Docker, id: &str) -> Result<ContainerInfo, RuntimeError> {
    let info = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => info,
        Err(e) if is_status(&e, 404) => {
            return Ok(ContainerInfo {
                id: id.to_string(),
                name: String::new(),
                status: ContainerStatus::Missing,
                host_ports: BTreeMap::new(),
                started_at: None,
            });
        }
        Err(e) => return Err(failed("inspect container", e)),
    };
    let state = info.state.unwrap_or_default();
    let status = match state.status {
        Some(ContainerStateStatusEnum::RUNNING) => ContainerStatus::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            ContainerStatus::Exited {
                code: state.exit_code.unwrap_or(-1),
                oom_killed: state.oom_killed.unwrap_or(false),
                error: state.error.unwrap_or_default(),
            }
        }
        other => ContainerStatus::Waiting {
            status: other.map(|s| s.to_string()).unwrap_or_default(),
        },
    };
    let host_ports = info
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default()
        .into_iter()
        .map(|(port, bindings)| {
            let bindings = bindings
                .unwrap_or_default()
                .into_iter()
                .map(|b| PortBinding {
                    host_ip: b.host_ip.unwrap_or_default(),
                    host_port: b.host_port.unwrap_or_default(),
                })
                .collect();
            (port, bindings)
        })
        .collect();
    Ok(ContainerInfo {
        id: info.id.unwrap_or_else(|| id.to_string()),
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        status,
        host_ports,
        started_at: parse_time(state.started_at),
    })
}

/// Waits for the container to stop running, then reports how it ended.
pub(super) async fn watch(
    docker: Docker,
    task_id: TaskId,
    id: String,
    exits: Recipient<ContainerExited>,
) {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut wait = docker.wait_container(&id, Some(options));
    match wait.next().await {
        Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) => {}
        Some(Err(e)) if is_status(&e, 404) => {}
        // The engine went away: the worker's periodic reconcile will look again.
        Some(Err(e)) => {
            log::warn!("lost the watch on container {id} of task {task_id}: {e}");
            return;
        }
        None => return,
    }
    let status = match inspect(&docker, &id).await {
        Ok(info) => info.status,
        Err(e) => {
            log::warn!("container {id} of task {task_id} ended but cannot be inspected: {e}");
            return;
        }
    };
    exits.do_send(ContainerExited {
        task_id,
        container_id: id,
        status,
    });
}

/// A root filesystem holding only the static `binary` as `/echo` (and an empty `/tmp`), as a tar.
pub fn echo_image_tar(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o1777);
    header.set_size(0);
    tar.append_data(&mut header, "tmp/", std::io::empty())?;
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o755);
    header.set_size(binary.len() as u64);
    tar.append_data(&mut header, "echo", binary)?;
    tar.into_inner()
}

/// Imports a root filesystem tar as image `image` (`docker import`), with Dockerfile-style
/// `changes` such as `CMD ["/echo"]`. Needs no registry.
pub async fn import_image(
    image: &str,
    rootfs_tar: Vec<u8>,
    changes: Vec<String>,
) -> Result<(), RuntimeError> {
    let docker = connect(Arc::new(Mutex::new(None))).await?;
    let (repo, tag) = image.rsplit_once(':').unwrap_or((image, "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes)
        .build();
    let mut stream = docker.create_image(
        Some(options),
        Some(bollard::body_full(rootfs_tar.into())),
        None,
    );
    while let Some(progress) = stream.next().await {
        progress.map_err(|e| failed("import image", e))?;
    }
    Ok(())
}

/// Whether a Docker engine answers here.
pub async fn docker_available() -> bool {
    connect(Arc::new(Mutex::new(None))).await.is_ok()
}
