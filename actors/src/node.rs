//! A node: a worker as the manager knows it, its capacity and whether it can take work.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether the manager can reach a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Answering; can take tasks.
    #[default]
    Ready,
    /// Not answering lately; gets no new tasks until it answers again.
    Unreachable,
}

/// A worker node, as the manager stores it (capacities are what the node offers to Cube).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The node's unique name.
    pub name: String,
    /// How the manager reaches it: `http://host:port` for a remote worker, `local` in-process.
    pub address: String,
    /// Always `worker` for now (the book's field).
    pub role: String,
    /// CPU cores offered to tasks.
    pub cpu: f64,
    /// Memory in bytes offered to tasks.
    pub memory: u64,
    /// Disk in bytes offered to tasks.
    pub disk: u64,
    /// Whether the node answers.
    pub status: NodeStatus,
    /// Whether the scheduler may place new tasks on it.
    pub eligible: bool,
    /// When the manager first saw the node.
    pub joined_at: DateTime<Utc>,
}
