//! Cube's library: the domain and one module per actor.
//!
//! - [`task`]: the task, its event envelope and the state machine (no I/O).
//! - [`node`]: a worker node as the manager knows it.
//! - [`store`]: the store actor, in memory or durable on LMDB.
//! - [`telemetry`]: the counters, gauges and histograms of `GET /metrics`.

pub mod backoff;
pub mod manager;
pub mod metrics;
pub mod node;
pub mod remote_worker;
pub mod resources;
pub mod runtime;
pub mod scheduler;
pub mod secret;
pub mod store;
pub mod task;
pub mod telemetry;
pub mod tls;
pub mod units;
pub mod unwritten;
pub mod worker;
