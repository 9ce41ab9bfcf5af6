//! A node: a worker as the manager knows it, its capacity and whether it can take work.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::metrics::Stats;
use crate::resources::Resources;

/// The address of a node whose worker runs in the manager's process.
pub const LOCAL_ADDRESS: &str = "local";

/// Whether the manager can reach a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Answering; can take tasks.
    #[default]
    Ready,
    /// Not answering lately; gets no new tasks until it answers again.
    Unreachable,
    /// Silent for longer than the manager waits (`node_down_after`): its tasks were placed
    /// again elsewhere. When it answers again it is Ready, and its stale copies are stopped.
    Down,
}

/// A worker node, as the manager stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The node's unique name (its worker's name).
    pub name: String,
    /// How the manager reaches it: `http://host:port`, or `local` for an in-process worker.
    pub address: String,
    /// Always `worker` (the book's field).
    pub role: String,
    /// What the node offers to tasks.
    pub capacity: Resources,
    /// Whether the scheduler may place new tasks on it.
    pub eligible: bool,
    /// When the manager first saw the node.
    pub joined_at: DateTime<Utc>,
}

/// A node as `GET /nodes` shows it: the stored record and what is live.
impl Node {
    /// The machine the node runs on, whose host ports its containers share: the host part of
    /// its address, or `local` for the nodes of a `cube up`, which share this machine.
    pub fn host(&self) -> &str {
        crate::remote_worker::host_and_port(&self.address).0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeReport {
    /// The node's name.
    pub name: String,
    /// How the manager reaches it.
    pub address: String,
    /// Always `worker`.
    pub role: String,
    /// Whether it answers.
    pub status: NodeStatus,
    /// Whether it may take new tasks.
    pub eligible: bool,
    /// What it offers.
    pub capacity: Resources,
    /// What the tasks placed on it reserve.
    pub reserved: Resources,
    /// How many tasks are placed on it and not ended.
    pub task_count: usize,
    /// Its latest metrics, if any arrived.
    pub stats: Option<Stats>,
    /// When the manager last heard from it.
    pub last_seen: Option<DateTime<Utc>>,
    /// The last error talking to it, while it is unreachable.
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(address: &str) -> Node {
        Node {
            name: "n".into(),
            address: address.into(),
            role: "worker".into(),
            capacity: Resources::default(),
            eligible: true,
            joined_at: Utc::now(),
        }
    }

    #[test]
    fn a_node_s_host_is_the_machine_its_ports_live_on() {
        assert_eq!(at("http://10.0.0.7:5556").host(), "10.0.0.7");
        assert_eq!(at("http://127.0.0.1:40000/").host(), "127.0.0.1");
        assert_eq!(at("worker-a:5556").host(), "worker-a");
        assert_eq!(at(LOCAL_ADDRESS).host(), "local");
    }
}
