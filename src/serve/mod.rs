//! Wiring: builds the actors of a node and puts the HTTP edge in front of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::dev::Server;
use anyhow::Context as _;
use cube_actors::manager::{AddLocalWorker, Manager, ManagerConfig, Retention};
use cube_actors::metrics::{MetricsCollector, machine_capacity};
use cube_actors::remote_worker::{JoinRequest, RemoteConfig, http_base, is_loopback, join_manager};
use cube_actors::resources::Resources;
use cube_actors::secret::{Access, Keys, Token, TokenHash, write_private};
use cube_actors::store::{SharedStore, Store, StoreKind};
use cube_actors::telemetry::{MachineMetrics, StoreMetrics, WorkerMetrics};
use cube_actors::worker::exit::RestartBudget;
use cube_actors::worker::health::HealthSettings;
use cube_actors::worker::{RuntimeKind, Worker, WorkerConfig};

mod edge;

use edge::{Edge, base_url, bind, client_tls, registry, serve_http, server_tls, server_token};

use crate::api::manager::ManagerState;
use crate::api::{self, worker::WorkerState};
use crate::config::{
    ClusterSettings, ManagerSettings, RuntimeChoice, Size, StoreChoice, WorkerSettings,
};

/// A running worker node: its actors and its HTTP server.
pub struct WorkerNode {
    /// The worker's name.
    pub name: String,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its base URL (`http://` or `https://`).
    pub url: String,
    /// The token for calling its API directly (its operator token).
    pub token: Token,
    /// The worker actor.
    pub worker: Addr<Worker>,
    /// Its store.
    pub store: Addr<Store>,
    /// The HTTP server; await it (or spawn it) to serve.
    pub server: Server,
}

/// The directory whose filesystem disk figures describe: the data directory, or the current
/// one while the data directory does not exist (an in-memory store).
fn measured_dir(data_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    if data_dir.exists() {
        Ok(data_dir.to_path_buf())
    } else {
        Ok(std::env::current_dir()?)
    }
}

/// The restart budget from its settings (max restarts, and the delay and window in ms).
fn restart_budget(max_restarts: u32, delay_ms: u64, window_ms: u64) -> RestartBudget {
    RestartBudget {
        max_restarts,
        delay: Duration::from_millis(delay_ms),
        window: Duration::from_millis(window_ms),
    }
}

/// The health settings from their settings (interval, timeout and grace in ms; failures).
fn health_settings([interval, timeout, grace]: [u64; 3], failures: u32) -> HealthSettings {
    HealthSettings {
        interval: Duration::from_millis(interval.max(50)),
        timeout: Duration::from_millis(timeout.max(10)),
        grace: Duration::from_millis(grace),
        failures: failures.max(1),
    }
}

/// What a node offers: each setting that is not 0, and `default` for the others.
fn offered(cpu: f64, memory: Size, disk: Size, default: Resources) -> Resources {
    Resources {
        cpu: if cpu > 0.0 { cpu } else { default.cpu },
        memory: if memory.0 > 0 {
            memory.0
        } else {
            default.memory
        },
        disk: if disk.0 > 0 { disk.0 } else { default.disk },
    }
}

/// Opens the store, starts the metrics collector, the runtime and the worker, and binds the API.
/// Must run inside an actix system.
pub async fn start_worker(settings: &WorkerSettings) -> anyhow::Result<WorkerNode> {
    let name = settings.resolved_name();
    let data_dir = settings.resolved_data_dir();
    let store_metrics = StoreMetrics::new("worker");
    let store = open_store(
        settings.store,
        &data_dir,
        settings.store_map_size_mib,
        &format!("worker {name}"),
        store_metrics.clone(),
    )?;
    match settings.store {
        StoreChoice::Lmdb => log::info!("worker {name} keeps its tasks in {}", data_dir.display()),
        StoreChoice::Memory => log::info!("worker {name} keeps its tasks in memory only"),
    }
    let measured = measured_dir(&data_dir)?;
    let machine = machine_capacity(&measured);
    let metrics = MetricsCollector::new(
        measured,
        Duration::from_millis(settings.stats_interval_ms.max(100)),
    )
    .start();
    let runtime = match settings.runtime {
        RuntimeChoice::Docker => RuntimeKind::Docker {
            publish_ip: settings.publish_ip.clone(),
        },
        RuntimeChoice::Sim => RuntimeKind::Sim {
            known_images: (!settings.sim_images.is_empty()).then(|| settings.sim_images.clone()),
            engine: None,
        },
    };
    let capacity = offered(settings.cpu, settings.memory, settings.disk, machine);
    let config = WorkerConfig {
        name: name.clone(),
        stop_timeout: Duration::from_secs(settings.stop_timeout_secs),
        reconcile_interval: Duration::from_millis(settings.reconcile_interval_ms.max(100)),
        capacity,
        restarts: restart_budget(
            settings.max_restarts,
            settings.restart_delay_ms,
            settings.restart_window_ms,
        ),
        health: health_settings(
            [
                settings.health_interval_ms,
                settings.health_timeout_ms,
                settings.health_grace_ms,
            ],
            settings.health_failures,
        ),
        stop_after_disconnect: (settings.stop_after_disconnect_ms > 0)
            .then(|| Duration::from_millis(settings.stop_after_disconnect_ms)),
        in_process: false,
        telemetry: WorkerMetrics::default(),
    };
    let machine = MachineMetrics::default();
    let (metrics_registry, http) = registry(|r| {
        config.telemetry.register(r);
        store_metrics.register(r);
        machine.register(r);
    });
    let worker = Worker::start(config, store.clone(), runtime, Some(metrics))
        .await
        .with_context(|| format!("worker {name}: cannot load its tasks"))?;
    let state = WorkerState {
        worker: worker.clone(),
        name: name.clone(),
        machine,
    };
    let what = format!("worker {name}");
    let durable = (settings.store == StoreChoice::Lmdb).then_some(&data_dir);
    let token = server_token(
        &settings.token,
        durable.map(|d| d.join("worker.token")),
        "worker",
        &what,
    )?;
    let keys = Keys::default();
    keys.allow(token.hash(), Access::Full);
    // The credential of the manager this worker enrolled with, kept as a hash only.
    let credential_file = durable.map(|d| d.join("manager.sha256"));
    if let Some(path) = &credential_file
        && let Ok(text) = std::fs::read_to_string(path)
    {
        let hash = TokenHash::try_from(text)
            .map_err(|e| anyhow::anyhow!("{what}: {}: {e}", path.display()))?;
        keys.allow(hash, Access::Manager);
    }
    let tls = server_tls(&settings.tls_cert, &settings.tls_key, &what)?;
    let listener = bind(
        &settings.listen,
        tls.is_some(),
        settings.allow_insecure_bind,
        &what,
    )?;
    let addr = listener.local_addr()?;
    let url = base_url(addr, tls.is_some());
    let server = serve_http(
        listener,
        state,
        api::worker::config,
        Edge {
            keys: keys.clone(),
            tls,
            metrics: metrics_registry,
            http,
        },
    )?;
    if let Some(dir) = &settings.user_config_dir {
        let entry = crate::access::Entry {
            address: url.clone(),
            token: token.expose().to_string(),
            join_token: None,
            metrics_token: None,
            ca_cert: (!settings.tls_ca.as_os_str().is_empty()).then(|| settings.tls_ca.clone()),
        };
        crate::access::save(dir, &entry)
            .with_context(|| format!("{what}: cannot write its entry in {}", dir.display()))?;
    }
    if !settings.manager.is_empty() {
        let join = join_request(settings, &name, &url, durable)?;
        actix::spawn(join_manager(join, move |credential: Token| {
            let hash = credential.hash();
            if let Some(path) = &credential_file
                && let Err(e) = write_private(path, &String::from(hash))
            {
                log::error!(
                    "cannot keep the manager's credential in {}: {e}",
                    path.display()
                );
            }
            keys.replace(hash, Access::Manager);
        }));
    }
    Ok(WorkerNode {
        name,
        addr,
        url,
        token,
        worker,
        store,
        server,
    })
}

/// What a worker enrolls with: its identity key (made at its first start, kept in the data
/// directory when durable), the join token (given, or the one this machine's manager left for
/// this user) and the CA to check the manager with.
fn join_request(
    settings: &WorkerSettings,
    name: &str,
    url: &str,
    durable: Option<&PathBuf>,
) -> anyhow::Result<JoinRequest> {
    let what = format!("worker {name}");
    let local = settings
        .user_config_dir
        .as_deref()
        .and_then(|dir| crate::access::load(dir, &settings.manager));
    let ca = if settings.tls_ca.as_os_str().is_empty() {
        local
            .as_ref()
            .and_then(|e| e.ca_cert.clone())
            .unwrap_or_default()
    } else {
        settings.tls_ca.clone()
    };
    // `--manager localhost:5555` reaches this machine's manager as it serves (HTTP or HTTPS);
    // with a CA, an address without a scheme is HTTPS.
    let manager = match &local {
        Some(entry) if !settings.manager.contains("://") => entry.address.clone(),
        _ if !settings.manager.contains("://") && !ca.as_os_str().is_empty() => {
            format!("https://{}", settings.manager.trim_end_matches('/'))
        }
        _ => http_base(&settings.manager),
    };
    if manager.starts_with("http://") && !is_loopback(&manager) && !settings.allow_insecure_bind {
        anyhow::bail!(
            "{what}: refusing to enroll with {manager} over plain HTTP: the join token and this \
             node's identity would cross the network in the clear. Use https:// with --tls-ca \
             (README, \"Distributed mode\"), or pass --allow-insecure-bind to do it anyway."
        );
    }
    let join_token = if !settings.join_token.is_empty() {
        Token::parse(&settings.join_token).with_context(|| format!("{what}: the join token"))?
    } else if let Some(token) = local.as_ref().and_then(|e| e.join_token.as_deref()) {
        Token::parse(token).with_context(|| format!("{what}: the join token"))?
    } else {
        anyhow::bail!(
            "{what}: enrolling with the manager at {manager} needs the cluster's join token: pass \
             --join-token (or CUBE_JOIN_TOKEN); `cube token --join` prints it on the manager's machine"
        );
    };
    let node_key = server_token("", durable.map(|d| d.join("node.key")), "node", &what)?;
    Ok(JoinRequest {
        manager,
        name: name.to_string(),
        advertise: if settings.advertise.is_empty() {
            url.to_string()
        } else {
            settings.advertise.clone()
        },
        node_key,
        join_token,
        replace: settings.replace,
        tls: client_tls(&ca, &what)?,
    })
}

/// A running manager: its actor and its HTTP server.
pub struct ManagerNode {
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its base URL (`http://` or `https://`).
    pub url: String,
    /// The cluster's admin token.
    pub admin_token: Token,
    /// The token workers enroll with.
    pub join_token: Token,
    /// Where the admin token is kept, in words (for the start-up message).
    pub token_place: String,
    /// The manager actor.
    pub manager: Addr<Manager>,
    /// Its store.
    pub store: Addr<Store>,
    /// The HTTP server; await it (or spawn it) to serve.
    pub server: Server,
}

/// Opens the store of `store` kind (durable in `dir`) and its writer, which counts its commits
/// in `metrics`; with `nodes`, in the layout of the nodes of one process.
fn open_shared(
    store: StoreChoice,
    dir: &std::path::Path,
    map_size_mib: usize,
    metrics: StoreMetrics,
    nodes: bool,
) -> Result<SharedStore, cube_actors::store::StoreError> {
    let kind = match store {
        StoreChoice::Memory => StoreKind::Memory,
        StoreChoice::Lmdb => StoreKind::Lmdb {
            dir: dir.to_path_buf(),
            map_size: map_size_mib << 20,
        },
    };
    if nodes {
        SharedStore::open_nodes_with(&kind, metrics)
    } else {
        SharedStore::open_with(&kind, metrics)
    }
}

/// The store of one node (a manager, or a worker of its own), as a whole.
fn open_store(
    store: StoreChoice,
    dir: &std::path::Path,
    map_size_mib: usize,
    what: &str,
    metrics: StoreMetrics,
) -> anyhow::Result<Addr<Store>> {
    let shared = open_shared(store, dir, map_size_mib, metrics, false)
        .with_context(|| format!("{what}: cannot open its store"))?;
    Ok(shared.whole())
}

/// The metrics of the in-process nodes of a `cube up`, which its manager shows.
struct LocalNodes {
    workers: WorkerMetrics,
    store: StoreMetrics,
}

/// Opens the manager's store, starts the manager, connects the configured workers, binds the API.
pub async fn start_manager(settings: &ManagerSettings) -> anyhow::Result<ManagerNode> {
    start_manager_with(settings, None).await
}

async fn start_manager_with(
    settings: &ManagerSettings,
    local: Option<&LocalNodes>,
) -> anyhow::Result<ManagerNode> {
    // With in-process nodes, one family of store metrics holds both stores' (by label).
    let store_metrics = match local {
        Some(local) => local.store.named("manager"),
        None => StoreMetrics::new("manager"),
    };
    let store = open_store(
        settings.store,
        &settings.data_dir,
        settings.store_map_size_mib,
        "manager",
        store_metrics.clone(),
    )?;
    let config = ManagerConfig {
        algorithm: settings.scheduler,
        poll_interval: Duration::from_millis(settings.poll_interval_ms.max(50)),
        sync_wait: Duration::from_millis(settings.sync_wait_ms.clamp(100, 60_000)),
        node_down_after: Duration::from_millis(settings.node_down_after_ms),
        max_replacements: settings.max_replacements,
        retention: Retention {
            max_finished: settings.retain_finished,
            max_age: Duration::from_secs(settings.retain_finished_secs),
        },
        prune_interval: Duration::from_millis(settings.prune_interval_ms.max(50)),
        remote: RemoteConfig {
            timeout: Duration::from_millis(settings.worker_timeout_ms.max(100)),
            tls: client_tls(&settings.tls_ca, "manager")?,
            ..RemoteConfig::default()
        },
        allow_privileged_ports: settings.allow_privileged_ports,
        allow_insecure_http: settings.allow_insecure_bind,
        max_waiting: settings.max_waiting.max(1),
        max_events: settings.max_events.max(1),
        ..ManagerConfig::default()
    };
    let (metrics_registry, http) = registry(|r| {
        config.telemetry.register(r);
        store_metrics.register(r);
        if let Some(local) = local {
            local.workers.register(r);
        }
    });
    let (waiting, max_waiting) = (config.waiting.clone(), config.max_waiting);
    let manager = Manager::start(config, store.clone())
        .await
        .context("manager: cannot load its tasks")?;
    let state = ManagerState {
        manager: manager.clone(),
        in_flight: Default::default(),
        max_in_flight: settings.max_in_flight.max(1),
        waiting,
        max_waiting,
        admission: Default::default(),
    };
    let durable = (settings.store == StoreChoice::Lmdb).then_some(&settings.data_dir);
    let file = |name: &str| durable.map(|d| d.join(name));
    let admin_token = server_token(&settings.token, file("admin.token"), "admin", "manager")?;
    let join_token = server_token(&settings.join_token, file("join.token"), "join", "manager")?;
    let metrics_token = server_token(
        &settings.metrics_token,
        file("metrics.token"),
        "metrics",
        "manager",
    )?;
    let keys = Keys::default();
    keys.allow(admin_token.hash(), Access::Full);
    keys.allow(join_token.hash(), Access::Join);
    keys.allow(metrics_token.hash(), Access::Metrics);
    let tls = server_tls(&settings.tls_cert, &settings.tls_key, "manager")?;
    let listener = bind(
        &settings.listen,
        tls.is_some(),
        settings.allow_insecure_bind,
        "manager",
    )?;
    let addr = listener.local_addr()?;
    let url = base_url(addr, tls.is_some());
    let edge = Edge {
        keys,
        tls,
        metrics: metrics_registry,
        http,
    };
    let server = serve_http(listener, state, api::manager::config, edge)?;
    let mut places = Vec::new();
    if let Some(path) = file("admin.token").filter(|_| settings.token.is_empty()) {
        places.push(path.display().to_string());
    }
    if let Some(dir) = &settings.user_config_dir {
        let entry = crate::access::Entry {
            address: url.clone(),
            token: admin_token.expose().to_string(),
            join_token: Some(join_token.expose().to_string()),
            metrics_token: Some(metrics_token.expose().to_string()),
            ca_cert: (!settings.tls_ca.as_os_str().is_empty()).then(|| settings.tls_ca.clone()),
        };
        let path = crate::access::save(dir, &entry)
            .with_context(|| format!("manager: cannot write its entry in {}", dir.display()))?;
        places.push(path.display().to_string());
    }
    let token_place = match (places.is_empty(), settings.token.is_empty()) {
        (false, _) => places.join(" and "),
        (true, false) => "the one given (setting `token`, CUBE_TOKEN)".to_string(),
        (true, true) => "nowhere: made for this run (memory store; choose one with --token)".into(),
    };
    Ok(ManagerNode {
        addr,
        url,
        admin_token,
        join_token,
        token_place,
        manager,
        store,
        server,
    })
}

/// Waits until every write queued in `stores` is committed (an empty batch is committed after
/// all the writes sent before it): what a graceful shutdown does before the process exits.
pub async fn flush(stores: &[Addr<Store>]) -> usize {
    let mut flushed = 0;
    for store in stores {
        if let Ok(Ok(())) = store.send(cube_actors::store::Batch(Vec::new())).await {
            flushed += 1;
        }
    }
    flushed
}

/// The all-in-one cluster: a manager and `workers` worker nodes in this process.
pub struct Cluster {
    /// The manager.
    pub manager: ManagerNode,
    /// The nodes' names.
    pub nodes: Vec<String>,
    /// The nodes' stores.
    pub stores: Vec<Addr<Store>>,
    /// The thread the nodes run on.
    pub nodes_thread: NodesThread,
}

/// The thread (an actix arbiter) the nodes of an all-in-one cluster run on.
pub struct NodesThread(actix::Arbiter);

impl NodesThread {
    /// Stops the nodes and waits for their thread to end: the first step of a graceful
    /// shutdown, so that no node writes to a store that is being flushed.
    pub async fn stop(self) {
        let arbiter = self.0;
        arbiter.stop();
        let _ = actix_web::rt::task::spawn_blocking(move || arbiter.join()).await;
    }
}

/// Starts a manager and the configured number of in-process worker nodes, each with its own
/// name, store and share of the machine, all sharing the local Docker engine (or simulated).
pub async fn start_cluster(settings: &ClusterSettings) -> anyhow::Result<Cluster> {
    anyhow::ensure!(
        settings.workers >= 1,
        "a cluster needs at least one worker node"
    );
    // The nodes share one store: a key prefix per node in one LMDB environment with one
    // writer, so that a commit spans nodes and the threads and files stay the same whatever the
    // number of nodes.
    let nodes_dir = settings.data_dir.join("nodes");
    let local = LocalNodes {
        workers: WorkerMetrics::default(),
        store: StoreMetrics::new("nodes"),
    };
    let size = settings.store_map_size_mib;
    let shared = open_shared(settings.store, &nodes_dir, size, local.store.clone(), true)
        .with_context(|| format!("the nodes' store in {}", nodes_dir.display()))?;
    let manager = start_manager_with(&settings.manager, Some(&local)).await?;
    if settings.store == StoreChoice::Lmdb {
        std::fs::create_dir_all(&settings.data_dir)
            .with_context(|| format!("cannot create {}", settings.data_dir.display()))?;
    }
    let measured = measured_dir(&settings.data_dir)?;
    let machine = machine_capacity(&measured);
    let n = settings.workers as f64;
    let share = Resources {
        // Rounded to a thousandth of a core: 2 cores over 3 nodes offer 0.667 each, not
        // 0.6666666666666666.
        cpu: (machine.cpu / n * 1000.0).floor() / 1000.0,
        memory: (machine.memory as f64 / n) as u64,
        disk: (machine.disk as f64 / n) as u64,
    };
    let capacity = offered(
        settings.node_cpu,
        settings.node_memory,
        settings.node_disk,
        share,
    );
    let runtime = match settings.runtime {
        RuntimeChoice::Docker => RuntimeKind::Docker {
            publish_ip: settings.publish_ip.clone(),
        },
        RuntimeChoice::Sim => RuntimeKind::Sim {
            known_images: None,
            engine: None,
        },
    };
    // One metrics collector serves every node: they share the machine.
    let metrics = MetricsCollector::new(measured, Duration::from_secs(1)).start();
    let config = |name: &str| WorkerConfig {
        name: name.to_string(),
        stop_timeout: Duration::from_secs(settings.stop_timeout_secs),
        reconcile_interval: Duration::from_secs(2),
        capacity,
        restarts: restart_budget(
            settings.max_restarts,
            settings.restart_delay_ms,
            settings.restart_window_ms,
        ),
        health: health_settings(
            [
                settings.health_interval_ms,
                settings.health_timeout_ms,
                settings.health_grace_ms,
            ],
            settings.health_failures,
        ),
        // In-process nodes share the manager's process: they cannot lose it.
        stop_after_disconnect: None,
        in_process: true,
        telemetry: local.workers.clone(),
    };
    // The nodes run on a thread of their own: the manager's thread stays the manager's (under
    // load, a thousand nodes' syncs and starts would otherwise queue with the submissions).
    let thread = actix::Arbiter::new();
    let arbiter = thread.handle();
    // Nodes load their tasks a few at a time: with thousands of nodes, one after the other
    // would take minutes, all at once would queue thousands of reads.
    use futures_util::StreamExt as _;
    let started: Vec<anyhow::Result<(String, Addr<Store>)>> =
        futures_util::stream::iter(1..=settings.workers)
            .map(|i| {
                let name = format!("{}-{i}", settings.node_prefix);
                let store = shared.node_on(&name, &arbiter);
                let config = config(&name);
                let (runtime, metrics) = (runtime.clone(), metrics.clone());
                let (manager, arbiter) = (manager.manager.clone(), &arbiter);
                async move {
                    let worker = Worker::start_on(
                        Some(arbiter),
                        config,
                        store.clone(),
                        runtime,
                        Some(metrics),
                    )
                    .await
                    .with_context(|| format!("{name}: cannot load its tasks"))?;
                    manager.do_send(AddLocalWorker {
                        name: name.clone(),
                        worker,
                        capacity,
                    });
                    Ok((name, store))
                }
            })
            .buffered(32)
            .collect()
            .await;
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for node in started {
        let (name, store) = node?;
        nodes.push(name);
        stores.push(store);
    }
    Ok(Cluster {
        manager,
        nodes,
        stores,
        nodes_thread: NodesThread(thread),
    })
}

/// The nodes of a start-up line: each name for a few, the first and last of many.
pub fn summarize_nodes(nodes: &[String]) -> String {
    match nodes {
        [] => "no nodes".into(),
        [one] => format!("node {one}"),
        few if few.len() <= 5 => format!("nodes {}", few.join(", ")),
        [first, .., last] => format!("{} nodes, {first} to {last}", nodes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_up_line_names_few_nodes_and_counts_many() {
        let names = |n: usize| (1..=n).map(|i| format!("node-{i}")).collect::<Vec<_>>();
        assert_eq!(summarize_nodes(&names(3)), "nodes node-1, node-2, node-3");
        assert_eq!(summarize_nodes(&names(1)), "node node-1");
        assert_eq!(
            summarize_nodes(&names(10_000)),
            "10000 nodes, node-1 to node-10000"
        );
    }
}
