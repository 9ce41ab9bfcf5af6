//! The command-line client: a manager API client, the commands people type, and table output.

pub mod client;
pub mod commands;
pub mod output;
pub mod run;
pub mod table;
pub mod watch;
