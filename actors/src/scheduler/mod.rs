//! Placement as pure code: feasibility, then scoring, then picking.
//!
//! Architecture invariant: nothing here does I/O or knows about actix. The manager hands the
//! scheduler a snapshot of the nodes ([`NodeView`]) and gets back a node name or the reason no
//! node fits. The [`SchedulerActor`](actor::SchedulerActor) only wraps this for the actor system.
//!
//! - **Feasibility**: a node is a candidate if it is ready, eligible, and its free capacity
//!   (capacity minus what the tasks already placed there reserve) covers the task's CPU, memory
//!   and disk.
//! - **Scoring**, by [`Algorithm`]: round-robin, E-PVM (opportunity cost) or greedy (least loaded).
//! - **Picking**: the lowest score; ties go to the first node by name.

pub mod actor;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resources::Resources;
use crate::task::Task;
use crate::units::{format_bytes as bytes, trim_float};

/// Lieb's square ice constant: the base of E-PVM's exponential cost (as in the book).
pub const LIEB: f64 = 1.539_600_717_839_002;

/// The CPU share E-PVM assumes for a task that asks for no CPU (of one core).
pub const DEFAULT_TASK_CPU: f64 = 0.1;

/// A node as the scheduler sees it: a snapshot, nothing live.
///
/// Built with [`NodeView::new`] and the setters, which keep E-PVM's per-node terms
/// (`L^load`) cached, so a decision costs one multiplication per node rather than four `powf`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    name: String,
    ready: bool,
    eligible: bool,
    capacity: Resources,
    reserved: Resources,
    task_count: usize,
    /// CPU the placed tasks are expected to use: their request, or [`DEFAULT_TASK_CPU`] for
    /// tasks that request none (so that E-PVM sees them, as the book's task-count term did).
    committed_cpu: f64,
    cpu_usage: f64,
    memory_usage: f64,
    /// `L^(CPU load)`, kept in step with the fields above.
    cpu_cost_base: f64,
    /// `L^(memory load)`, kept in step with the fields above.
    memory_cost_base: f64,
}

impl NodeView {
    /// A ready, eligible, idle node named `name` offering `capacity`.
    pub fn new(name: impl Into<String>, capacity: Resources) -> NodeView {
        let mut node = NodeView {
            name: name.into(),
            ready: true,
            eligible: true,
            capacity,
            reserved: Resources::default(),
            task_count: 0,
            committed_cpu: 0.0,
            cpu_usage: 0.0,
            memory_usage: 0.0,
            cpu_cost_base: 1.0,
            memory_cost_base: 1.0,
        };
        node.refresh();
        node
    }

    /// Sets what the tasks placed on the node reserve, and how many there are.
    pub fn with_reserved(mut self, reserved: Resources, task_count: usize) -> NodeView {
        self.reserved = reserved;
        self.task_count = task_count;
        self.refresh();
        self
    }

    /// Sets the CPU the placed tasks are expected to use (see [`effective_cpu`]).
    pub fn with_committed_cpu(mut self, cpu: f64) -> NodeView {
        self.committed_cpu = cpu.max(0.0);
        self.refresh();
        self
    }

    /// Sets the measured CPU and memory usage of the node's machine (each 0-1).
    pub fn with_usage(mut self, cpu: f64, memory: f64) -> NodeView {
        self.cpu_usage = if cpu.is_finite() {
            cpu.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.memory_usage = if memory.is_finite() {
            memory.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.refresh();
        self
    }

    /// Sets whether the node answers and whether it may take new tasks.
    pub fn with_status(mut self, ready: bool, eligible: bool) -> NodeView {
        self.ready = ready;
        self.eligible = eligible;
        self
    }

    fn refresh(&mut self) {
        self.cpu_cost_base = LIEB.powf(self.cpu_load());
        self.memory_cost_base = LIEB.powf(self.memory_load());
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the node offers.
    pub fn capacity(&self) -> Resources {
        self.capacity
    }

    /// What is reserved on it.
    pub fn reserved(&self) -> Resources {
        self.reserved
    }

    /// How many tasks are placed on it.
    pub fn task_count(&self) -> usize {
        self.task_count
    }

    /// What is left to reserve.
    pub fn free(&self) -> Resources {
        self.capacity.minus(self.reserved)
    }

    /// Whether `demand` fits in what is left.
    pub fn fits(&self, demand: Resources) -> bool {
        let free = self.free();
        demand.cpu <= free.cpu + 1e-9 && demand.memory <= free.memory && demand.disk <= free.disk
    }

    /// CPU load before placing anything: the larger of what the placed tasks are expected to
    /// use and what is measured.
    fn cpu_load(&self) -> f64 {
        let committed = ratio(self.reserved.cpu.max(self.committed_cpu), self.capacity.cpu);
        committed.max(self.cpu_usage)
    }

    /// Memory load before placing anything: the larger of what is reserved and what is measured.
    fn memory_load(&self) -> f64 {
        let reserved = ratio(self.reserved.memory as f64, self.capacity.memory as f64);
        reserved.max(self.memory_usage)
    }
}

fn ratio(used: f64, capacity: f64) -> f64 {
    if capacity > 0.0 { used / capacity } else { 1.0 }
}

/// How the scheduler scores candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Each ready node in turn, by name.
    RoundRobin,
    /// Enhanced parallel virtual machine: the node where the task's added load costs least,
    /// with cost exponential in load (the book's algorithm, with its CPU term restored).
    #[default]
    Epvm,
    /// The node that is least loaded after placement (the larger of CPU and memory share).
    Greedy,
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "roundrobin" | "round-robin" | "rr" => Ok(Algorithm::RoundRobin),
            "epvm" | "e-pvm" => Ok(Algorithm::Epvm),
            "greedy" | "least-loaded" => Ok(Algorithm::Greedy),
            other => Err(format!(
                "unknown scheduler `{other}`, expected roundrobin, epvm or greedy"
            )),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::RoundRobin => "roundrobin",
            Algorithm::Epvm => "epvm",
            Algorithm::Greedy => "greedy",
        })
    }
}

/// No node can take the task, and why (in words for the user).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unplaceable(pub String);

/// The scheduler: an algorithm and the little state round-robin needs.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    /// The scoring algorithm.
    pub algorithm: Algorithm,
    /// Round-robin: the name of the node that got the last task.
    last: Option<String>,
}

impl Scheduler {
    /// A scheduler using `algorithm`.
    pub fn new(algorithm: Algorithm) -> Scheduler {
        Scheduler {
            algorithm,
            last: None,
        }
    }

    /// Picks the node for `task` among `nodes`, or says why none fits.
    pub fn select<'a>(
        &mut self,
        task: &Task,
        nodes: impl IntoIterator<Item = &'a NodeView, IntoIter: Clone>,
    ) -> Result<String, Unplaceable> {
        self.select_with_ports(task, nodes, |_, _| true)
    }

    /// [`Scheduler::select`], where a task asking for fixed host ports goes only to a node on
    /// which `port_free(node, port)` holds for each of them. The nodes may come in any order.
    pub fn select_with_ports<'a>(
        &mut self,
        task: &Task,
        nodes: impl IntoIterator<Item = &'a NodeView, IntoIter: Clone>,
        port_free: impl Fn(&NodeView, u16) -> bool,
    ) -> Result<String, Unplaceable> {
        self.choose(&Demand::of(task), nodes, port_free, Order::Any)
    }

    /// [`Scheduler::select_with_ports`] for `demand`, with `nodes` in name order (as a map by
    /// name gives them): ties go to the first without comparing names.
    pub fn select_in_name_order<'a>(
        &mut self,
        demand: &Demand,
        nodes: impl IntoIterator<Item = &'a NodeView, IntoIter: Clone>,
        port_free: impl Fn(&NodeView, u16) -> bool,
    ) -> Result<String, Unplaceable> {
        self.choose(demand, nodes, port_free, Order::ByName)
    }

    /// One pass over the nodes, scoring each one that can take `demand` as it comes; the nodes
    /// are walked again only to say why none could.
    fn choose<'a>(
        &mut self,
        demand: &Demand,
        nodes: impl IntoIterator<Item = &'a NodeView, IntoIter: Clone>,
        port_free: impl Fn(&NodeView, u16) -> bool,
        order: Order,
    ) -> Result<String, Unplaceable> {
        let nodes = nodes.into_iter();
        let need = demand.resources;
        let last = self.last.as_deref();
        // `L^(d/capacity)` is the same for nodes of the same capacity: computed once per capacity.
        let mut steps: Option<(Resources, f64, f64)> = None;
        let mut best: Option<(&NodeView, f64)> = None;
        let mut port_taken = false;
        #[cfg(debug_assertions)]
        let mut previous: Option<&str> = None;
        for node in nodes.clone() {
            #[cfg(debug_assertions)]
            if order == Order::ByName {
                debug_assert!(
                    previous < Some(node.name.as_str()),
                    "nodes out of name order"
                );
                previous = Some(&node.name);
            }
            if !(node.ready && node.eligible && node.fits(need)) {
                continue;
            }
            if !demand.ports.iter().all(|p| port_free(node, *p)) {
                port_taken = true;
                continue;
            }
            let score = match self.algorithm {
                // The first by name after the last pick, else (the round wraps) the first: the
                // score orders the wrapped nodes after the others, and names break the tie.
                Algorithm::RoundRobin => {
                    if last.is_some_and(|l| node.name.as_str() <= l) {
                        1.0
                    } else {
                        0.0
                    }
                }
                Algorithm::Epvm => {
                    let (cpu_step, mem_step) = match steps {
                        Some((capacity, c, m)) if capacity == node.capacity => (c, m),
                        _ => {
                            let (c, m) = epvm_steps(node, need);
                            steps = Some((node.capacity, c, m));
                            (c, m)
                        }
                    };
                    node.cpu_cost_base * (cpu_step - 1.0) + node.memory_cost_base * (mem_step - 1.0)
                }
                Algorithm::Greedy => greedy_load(node, need),
            };
            let better = match best {
                None => true,
                Some((held, held_score)) => {
                    score < held_score
                        || (score == held_score && order == Order::Any && node.name < held.name)
                }
            };
            if better {
                best = Some((node, score));
            }
        }
        let Some((chosen, _)) = best else {
            if port_taken {
                let ports: Vec<String> = demand.ports.iter().map(u16::to_string).collect();
                return Err(Unplaceable(format!(
                    "host port {} is taken on every node with room for the task",
                    ports.join(", ")
                )));
            }
            return Err(why_unplaceable(need, &nodes.collect::<Vec<_>>()));
        };
        self.last = Some(chosen.name.clone());
        Ok(chosen.name.clone())
    }
}

/// The order nodes are handed to a decision in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Any: ties are broken by comparing names.
    Any,
    /// By name: the first of equal scores is the first by name.
    ByName,
}

/// What a task asks of the node it goes to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Demand {
    /// CPU, memory and disk it reserves.
    pub resources: Resources,
    /// The fixed host ports it binds, sorted, each once.
    pub ports: Vec<u16>,
}

impl Demand {
    /// What `task` asks for.
    pub fn of(task: &Task) -> Demand {
        Demand {
            resources: Resources::of(task),
            ports: fixed_host_ports(task),
        }
    }
}

/// The fixed host ports a task asks for (`PortBindings` with a host port).
pub fn fixed_host_ports(task: &Task) -> Vec<u16> {
    let mut ports: Vec<u16> = task
        .port_bindings
        .values()
        .filter_map(|p| p.parse().ok())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The CPU a task is expected to use: its request, or [`DEFAULT_TASK_CPU`] if it asks for none.
pub fn effective_cpu(demand: Resources) -> f64 {
    if demand.cpu > 0.0 {
        demand.cpu
    } else {
        DEFAULT_TASK_CPU
    }
}

/// E-PVM's marginal cost of placing `demand` on `node`: for CPU and memory,
/// `L^(load after) - L^(load before)`. The cost grows with the load already there, so CPU
/// that is busy (measured or reserved) makes a node more expensive, as the paper intends.
pub fn epvm_cost(node: &NodeView, demand: Resources) -> f64 {
    let cpu_demand = if demand.cpu > 0.0 {
        demand.cpu
    } else {
        DEFAULT_TASK_CPU
    };
    let cpu_before = node.cpu_load();
    let cpu_after = cpu_before + ratio(cpu_demand, node.capacity.cpu);
    let mem_before = node.memory_load();
    let mem_after = mem_before + ratio(demand.memory as f64, node.capacity.memory as f64);
    (LIEB.powf(cpu_after) - LIEB.powf(cpu_before)) + (LIEB.powf(mem_after) - LIEB.powf(mem_before))
}

/// `L^(demand / capacity)` for CPU and memory: the factor E-PVM's cost grows by on `node`.
fn epvm_steps(node: &NodeView, demand: Resources) -> (f64, f64) {
    let cpu_demand = if demand.cpu > 0.0 {
        demand.cpu
    } else {
        DEFAULT_TASK_CPU
    };
    (
        LIEB.powf(ratio(cpu_demand, node.capacity.cpu)),
        LIEB.powf(ratio(demand.memory as f64, node.capacity.memory as f64)),
    )
}

/// Greedy: the node's load after placement (the larger of its CPU and memory share).
pub fn greedy_load(node: &NodeView, demand: Resources) -> f64 {
    let cpu_demand = if demand.cpu > 0.0 {
        demand.cpu
    } else {
        DEFAULT_TASK_CPU
    };
    let cpu = node.cpu_load() + ratio(cpu_demand, node.capacity.cpu);
    let mem = node.memory_load() + ratio(demand.memory as f64, node.capacity.memory as f64);
    cpu.max(mem)
}

/// Says, for the user, why no node can take `demand`.
fn why_unplaceable(demand: Resources, nodes: &[&NodeView]) -> Unplaceable {
    let usable: Vec<&NodeView> = nodes
        .iter()
        .copied()
        .filter(|n| n.ready && n.eligible)
        .collect();
    if nodes.is_empty() {
        return Unplaceable("no worker node has joined the cluster".into());
    }
    if usable.is_empty() {
        return Unplaceable(format!(
            "none of the {} nodes is ready and eligible",
            nodes.len()
        ));
    }
    let max_free =
        |f: fn(&Resources) -> f64| usable.iter().map(|n| f(&n.free())).fold(0.0, f64::max);
    let mut short = Vec::new();
    let cpu_free = max_free(|r| r.cpu);
    if demand.cpu > cpu_free + 1e-9 {
        short.push(format!(
            "{} free CPU cores (most free: {})",
            trim_float(demand.cpu),
            trim_float(cpu_free)
        ));
    }
    let mem_free = max_free(|r| r.memory as f64) as u64;
    if demand.memory > mem_free {
        short.push(format!(
            "{} free memory (most free: {})",
            bytes(demand.memory),
            bytes(mem_free)
        ));
    }
    let disk_free = max_free(|r| r.disk as f64) as u64;
    if demand.disk > disk_free {
        short.push(format!(
            "{} free disk (most free: {})",
            bytes(demand.disk),
            bytes(disk_free)
        ));
    }
    if short.is_empty() {
        Unplaceable("no single node has enough free CPU, memory and disk together".into())
    } else {
        Unplaceable(format!("no node has {}", short.join(" or ")))
    }
}

#[cfg(test)]
mod tests;
