//! The `cube` binary's library: the HTTP edge, settings and wiring.
//!
//! - [`api`]: actix-web routes; the only code that knows HTTP.
//! - [`config`]: settings files and their defaults.
//! - [`serve`]: builds a node's actors and its HTTP server.
//!
//! The domain and the actors live in the `cube-actors` crate (`actors/`).

pub mod api;
pub mod config;
pub mod serve;
