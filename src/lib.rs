//! The `cube` binary's library: the HTTP edge, settings and wiring.
//!
//! - [`api`]: actix-web routes; the only code that knows HTTP.
//! - [`cli`]: the manager API client and the commands `run`, `stop`, `status`, `node`, `logs`.
//! - [`bench`]: the load harness behind the hidden `cube bench`.
//! - [`config`]: settings files and their defaults.
//! - [`serve`]: builds a node's actors and its HTTP server.
//!
//! The domain and the actors live in the `cube-actors` crate (`actors/`).

pub mod access;
pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod pki;
pub mod serve;
