//! Wiring: builds the actors of a node and puts the HTTP edge in front of them.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::middleware::{Logger, NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context as _;
use cube_actors::backoff::Backoff;
use cube_actors::manager::{AddLocalWorker, ConnectWorker, Manager, ManagerConfig, Retention};
use cube_actors::metrics::{MetricsCollector, machine_capacity};
use cube_actors::remote_worker::{RemoteConfig, join_manager};
use cube_actors::resources::Resources;
use cube_actors::store::{Store, StoreKind};
use cube_actors::worker::exit::RestartBudget;
use cube_actors::worker::health::HealthSettings;
use cube_actors::worker::{RuntimeKind, Worker, WorkerConfig};

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
    /// The worker actor.
    pub worker: Addr<Worker>,
    /// Its store.
    pub store: Addr<Store>,
    /// The HTTP server; await it (or spawn it) to serve.
    pub server: Server,
}

/// The HTTP edge of a node: `routes` over `state`, with the API's extractor settings, trailing
/// slashes ignored, an access log, and JSON 404s for unknown routes.
fn serve_http<S: Clone + Send + 'static>(
    listener: TcpListener,
    state: S,
    routes: fn(&mut web::ServiceConfig),
) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(api::json_config())
            .app_data(api::query_config())
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(Logger::new("%a \"%r\" %s %Dms").log_level(log::Level::Debug))
            .configure(routes)
            .default_service(web::to(api::no_route))
    })
    .workers(2)
    .listen(listener)?
    .run())
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
    let store = open_store(
        settings.store,
        &data_dir,
        settings.store_map_size_mib,
        &format!("worker {name}"),
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
    };
    let worker = Worker::start(config, store.clone(), runtime, Some(metrics))
        .await
        .with_context(|| format!("worker {name}: cannot load its tasks"))?;
    let state = WorkerState {
        worker: worker.clone(),
        name: name.clone(),
    };
    let listener = TcpListener::bind(&settings.listen)
        .with_context(|| format!("worker {name}: cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let server = serve_http(listener, state, api::worker::config)?;
    if !settings.manager.is_empty() {
        let advertise = if settings.advertise.is_empty() {
            format!("http://{addr}")
        } else {
            settings.advertise.clone()
        };
        actix::spawn(join_manager(settings.manager.clone(), advertise));
    }
    Ok(WorkerNode {
        name,
        addr,
        worker,
        store,
        server,
    })
}

/// A running manager: its actor and its HTTP server.
pub struct ManagerNode {
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// The manager actor.
    pub manager: Addr<Manager>,
    /// Its store.
    pub store: Addr<Store>,
    /// The HTTP server; await it (or spawn it) to serve.
    pub server: Server,
}

fn open_store(
    store: StoreChoice,
    dir: &std::path::Path,
    map_size_mib: usize,
    what: &str,
) -> anyhow::Result<Addr<Store>> {
    let kind = match store {
        StoreChoice::Memory => StoreKind::Memory,
        StoreChoice::Lmdb => StoreKind::Lmdb {
            dir: dir.to_path_buf(),
            map_size: map_size_mib << 20,
        },
    };
    Store::open(&kind).with_context(|| format!("{what}: cannot open its store"))
}

/// Opens the manager's store, starts the manager, connects the configured workers, binds the API.
pub async fn start_manager(settings: &ManagerSettings) -> anyhow::Result<ManagerNode> {
    let store = open_store(
        settings.store,
        &settings.data_dir,
        settings.store_map_size_mib,
        "manager",
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
            ..RemoteConfig::default()
        },
        ..ManagerConfig::default()
    };
    let manager = Manager::start(config, store.clone())
        .await
        .context("manager: cannot load its tasks")?;
    for address in &settings.workers {
        actix::spawn(connect_until_joined(manager.clone(), address.clone()));
    }
    let state = ManagerState {
        manager: manager.clone(),
        in_flight: Default::default(),
        max_in_flight: settings.max_in_flight.max(1),
    };
    let listener = TcpListener::bind(&settings.listen)
        .with_context(|| format!("manager: cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let server = serve_http(listener, state, api::manager::config)?;
    Ok(ManagerNode {
        addr,
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

/// Connects the manager to the worker at `address`, retrying until the worker answers.
async fn connect_until_joined(manager: Addr<Manager>, address: String) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match manager
            .send(ConnectWorker {
                address: address.clone(),
            })
            .await
        {
            Ok(Ok(node)) => {
                log::info!("connected to worker {} at {}", node.name, node.address);
                return;
            }
            Ok(Err(e)) => log::warn!("cannot connect to worker {address} yet: {e}"),
            Err(_) => return,
        }
        actix::clock::sleep(backoff.next_wait()).await;
    }
}

/// The all-in-one cluster: a manager and `workers` worker nodes in this process.
pub struct Cluster {
    /// The manager.
    pub manager: ManagerNode,
    /// The nodes' names.
    pub nodes: Vec<String>,
    /// The nodes' stores.
    pub stores: Vec<Addr<Store>>,
}

/// Starts a manager and the configured number of in-process worker nodes, each with its own
/// name, store and share of the machine, all sharing the local Docker engine (or simulated).
pub async fn start_cluster(settings: &ClusterSettings) -> anyhow::Result<Cluster> {
    anyhow::ensure!(
        settings.workers >= 1,
        "a cluster needs at least one worker node"
    );
    let mut manager_settings = settings.manager.clone();
    manager_settings.workers.clear();
    let manager = start_manager(&manager_settings).await?;
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
    let mut nodes = Vec::new();
    let mut stores = Vec::new();
    for i in 1..=settings.workers {
        let name = format!("{}-{i}", settings.node_prefix);
        let store = open_store(settings.store, &settings.data_dir.join(&name), 256, &name)?;
        let config = WorkerConfig {
            name: name.clone(),
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
        };
        stores.push(store.clone());
        let worker = Worker::start(config, store, runtime.clone(), Some(metrics.clone()))
            .await
            .with_context(|| format!("{name}: cannot load its tasks"))?;
        manager.manager.do_send(AddLocalWorker {
            name: name.clone(),
            worker,
            capacity,
        });
        nodes.push(name);
    }
    Ok(Cluster {
        manager,
        nodes,
        stores,
    })
}
