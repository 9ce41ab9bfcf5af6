//! CPU, memory and disk: what a node offers, what a task asks for, what is reserved.
//!
//! Units are fixed here: CPU in cores, memory and disk in bytes.

use serde::{Deserialize, Serialize};

use crate::task::Task;

/// CPU, memory and disk: a capacity, a reservation or a demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Resources {
    /// CPU cores.
    pub cpu: f64,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes.
    pub disk: u64,
}

impl Resources {
    /// What a task asks for.
    pub fn of(task: &Task) -> Resources {
        Resources {
            cpu: task.cpu,
            memory: task.memory,
            disk: task.disk,
        }
    }

    /// `self + other`.
    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu: self.cpu + other.cpu,
            memory: self.memory.saturating_add(other.memory),
            disk: self.disk.saturating_add(other.disk),
        }
    }

    /// `self - other`, never below zero.
    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu: (self.cpu - other.cpu).max(0.0),
            memory: self.memory.saturating_sub(other.memory),
            disk: self.disk.saturating_sub(other.disk),
        }
    }
}
