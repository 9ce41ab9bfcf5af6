//! Wiring: builds the actors of a node and puts the HTTP edge in front of them.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix::{Actor, Addr};
use actix_web::middleware::{Logger, NormalizePath, TrailingSlash};
use actix_web::{App, HttpServer, dev::Server, web};
use anyhow::Context as _;
use cube_actors::metrics::MetricsCollector;
use cube_actors::store::{Store, StoreKind};
use cube_actors::worker::{RuntimeKind, Worker, WorkerConfig};

use crate::api::{self, worker::WorkerState};
use crate::config::{RuntimeChoice, StoreChoice, WorkerSettings};

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

/// Opens the store, starts the metrics collector, the runtime and the worker, and binds the API.
/// Must run inside an actix system.
pub async fn start_worker(settings: &WorkerSettings) -> anyhow::Result<WorkerNode> {
    let name = settings.resolved_name();
    let data_dir = settings.resolved_data_dir();
    let kind = match settings.store {
        StoreChoice::Memory => StoreKind::Memory,
        StoreChoice::Lmdb => StoreKind::Lmdb {
            dir: data_dir.clone(),
            map_size: settings.store_map_size_mib << 20,
        },
    };
    let store =
        Store::open(&kind).with_context(|| format!("worker {name}: cannot open its store"))?;
    // Disk figures describe the filesystem that holds the data directory.
    let measured = if data_dir.exists() {
        data_dir.clone()
    } else {
        std::env::current_dir()?
    };
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
        },
    };
    let config = WorkerConfig {
        name: name.clone(),
        stop_timeout: Duration::from_secs(settings.stop_timeout_secs),
        reconcile_interval: Duration::from_millis(settings.reconcile_interval_ms.max(100)),
    };
    let worker = Worker::start(config, store.clone(), runtime, Some(metrics.clone()))
        .await
        .with_context(|| format!("worker {name}: cannot load its tasks"))?;
    let state = WorkerState {
        worker: worker.clone(),
        metrics,
        name: name.clone(),
    };
    let listener = TcpListener::bind(&settings.listen)
        .with_context(|| format!("worker {name}: cannot listen on {}", settings.listen))?;
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(api::json_config())
            .app_data(api::query_config())
            .wrap(NormalizePath::new(TrailingSlash::Trim))
            .wrap(Logger::new("%a \"%r\" %s %Dms"))
            .configure(api::worker::config)
            .default_service(web::to(api::no_route))
    })
    .workers(2)
    .listen(listener)?
    .run();
    Ok(WorkerNode {
        name,
        addr,
        worker,
        store,
        server,
    })
}
