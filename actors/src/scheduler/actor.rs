//! The scheduler actor: holds the cluster's node views and reservations, places tasks one at a time.
//!
//! Placement and reservation happen in the same message, so two tasks placed back to back can
//! never both take the last free gigabyte of a node.

use std::collections::{BTreeMap, HashMap, HashSet};

use actix::prelude::*;

use super::{Algorithm, Demand, NodeView, Scheduler, Unplaceable, effective_cpu};
use crate::resources::Resources;
use crate::task::{Task, TaskId};

/// The scheduler actor.
pub struct SchedulerActor {
    /// The algorithm and its state.
    scheduler: Scheduler,
    /// Every node, by name.
    nodes: BTreeMap<String, NodeView>,
    /// What each placed task reserves, and where.
    placements: HashMap<TaskId, (String, Resources)>,
    /// The fixed host ports each placed task holds (only tasks that ask for some).
    ports: HashMap<TaskId, Vec<u16>>,
    /// The machine each node runs on (nodes of one `cube up` share one, and its ports).
    hosts: HashMap<String, String>,
    /// How many nodes run on each machine.
    per_host: HashMap<String, usize>,
}

impl SchedulerActor {
    /// A scheduler using `algorithm`, with no nodes yet.
    pub fn new(algorithm: Algorithm) -> SchedulerActor {
        SchedulerActor {
            scheduler: Scheduler::new(algorithm),
            nodes: BTreeMap::new(),
            placements: HashMap::new(),
            ports: HashMap::new(),
            hosts: HashMap::new(),
            per_host: HashMap::new(),
        }
    }

    /// Records that `node` runs on `host` (or on none, when it is forgotten).
    fn set_host(&mut self, node: &str, host: Option<&str>) {
        if self.hosts.get(node).map(String::as_str) == host {
            // A status change: nothing moved (and a machine of two must not be seen becoming
            // shared again at every one).
            return;
        }
        let old = match host {
            Some(host) => self.hosts.insert(node.to_string(), host.to_string()),
            None => self.hosts.remove(node),
        };
        if let Some(old) = old
            && let Some(n) = self.per_host.get_mut(&old)
        {
            *n -= 1;
            if *n == 0 {
                self.per_host.remove(&old);
            }
        }
        let Some(host) = host else { return };
        let count = self.per_host.entry(host.to_string()).or_default();
        *count += 1;
        if *count == 2 {
            // The node that had the machine to itself no longer tells anything by its usage.
            let alone = self
                .hosts
                .iter()
                .find(|(other, h)| *h == host && other.as_str() != node);
            if let Some(view) = alone.and_then(|(other, _)| self.nodes.get_mut(other)) {
                *view = view.clone().with_usage(0.0, 0.0);
            }
        }
    }

    /// Whether `node` shares its machine with another node. What is measured there is the
    /// machine's usage, the same for each of them: it tells none of them from the others, so
    /// their reservations alone weigh (else, on a busy machine, the first by name would win
    /// every tie and take every task of a `cube up`).
    fn shares_machine(&self, node: &str) -> bool {
        self.hosts
            .get(node)
            .and_then(|host| self.per_host.get(host))
            .is_some_and(|n| *n > 1)
    }

    /// The `(machine, port)` pairs held among `wanted` ports.
    fn taken(&self, wanted: &[u16]) -> HashSet<(String, u16)> {
        let mut taken = HashSet::new();
        for (task, ports) in &self.ports {
            let Some((node, _)) = self.placements.get(task) else {
                continue;
            };
            let host = self.hosts.get(node).unwrap_or(node);
            for port in ports.iter().filter(|p| wanted.contains(p)) {
                taken.insert((host.clone(), *port));
            }
        }
        taken
    }

    /// Adds (`sign` 1) or removes (`sign` -1) a task's demand on a node's view.
    fn adjust(&mut self, node: &str, demand: Resources, sign: i8) {
        if let Some(view) = self.nodes.get_mut(node) {
            let (reserved, count, committed) = if sign > 0 {
                (
                    view.reserved().plus(demand),
                    view.task_count() + 1,
                    view.committed_cpu + effective_cpu(demand),
                )
            } else {
                (
                    view.reserved().minus(demand),
                    view.task_count().saturating_sub(1),
                    view.committed_cpu - effective_cpu(demand),
                )
            };
            *view = view
                .clone()
                .with_reserved(reserved, count)
                .with_committed_cpu(committed);
        }
    }

    fn reserve(&mut self, task: TaskId, node: String, demand: Resources, ports: Vec<u16>) {
        self.release(task);
        self.adjust(&node, demand, 1);
        self.placements.insert(task, (node, demand));
        if !ports.is_empty() {
            self.ports.insert(task, ports);
        }
    }

    fn release(&mut self, task: TaskId) {
        if let Some((node, demand)) = self.placements.remove(&task) {
            self.adjust(&node, demand, -1);
        }
        self.ports.remove(&task);
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;
}

/// Adds a node or updates its capacity and status (its reservations stay).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpsertNode {
    /// The node's name.
    pub name: String,
    /// What it offers.
    pub capacity: Resources,
    /// Whether it answers.
    pub ready: bool,
    /// Whether it may take new tasks.
    pub eligible: bool,
    /// The machine it runs on, whose host ports it shares with the other nodes there.
    pub host: String,
}

/// Handler for [`UpsertNode`].
impl Handler<UpsertNode> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: UpsertNode, _: &mut Context<Self>) {
        self.set_host(&msg.name, Some(&msg.host));
        let shared = self.shares_machine(&msg.name);
        let view = match self.nodes.remove(&msg.name) {
            Some(old) => {
                let (reserved, count) = (old.reserved(), old.task_count());
                let (cpu, mem) = if shared {
                    (0.0, 0.0)
                } else {
                    (old.cpu_usage, old.memory_usage)
                };
                NodeView::new(msg.name.clone(), msg.capacity)
                    .with_reserved(reserved, count)
                    .with_committed_cpu(old.committed_cpu)
                    .with_usage(cpu, mem)
            }
            // A node seen for the first time may already hold tasks (reserved after a manager
            // restart, before its node reconnected).
            None => {
                let held: Vec<Resources> = self
                    .placements
                    .values()
                    .filter(|(node, _)| *node == msg.name)
                    .map(|(_, demand)| *demand)
                    .collect();
                let reserved = held
                    .iter()
                    .fold(Resources::default(), |sum, d| sum.plus(*d));
                let committed: f64 = held.iter().map(|d| effective_cpu(*d)).sum();
                NodeView::new(msg.name.clone(), msg.capacity)
                    .with_reserved(reserved, held.len())
                    .with_committed_cpu(committed)
            }
        };
        self.nodes
            .insert(msg.name, view.with_status(msg.ready, msg.eligible));
    }
}

/// The measured CPU and memory usage of a node's machine (each 0-1).
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeUsage {
    /// The node.
    pub name: String,
    /// CPU busy share.
    pub cpu: f64,
    /// Memory used share.
    pub memory: f64,
}

/// Handler for [`NodeUsage`].
impl Handler<NodeUsage> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: NodeUsage, _: &mut Context<Self>) {
        if self.shares_machine(&msg.name) {
            return;
        }
        if let Some(view) = self.nodes.get_mut(&msg.name) {
            *view = view.clone().with_usage(msg.cpu, msg.memory);
        }
    }
}

/// Chooses a node for a task and reserves the task's resources there.
#[derive(Message)]
#[rtype(result = "Result<String, Unplaceable>")]
pub struct Place(pub Task);

/// Handler for [`Place`].
impl Handler<Place> for SchedulerActor {
    type Result = Result<String, Unplaceable>;

    fn handle(&mut self, Place(task): Place, _: &mut Context<Self>) -> Self::Result {
        self.place(task.id, Demand::of(&task), &[])
    }
}

/// Chooses a node for a task, avoiding some nodes if another fits (a task that failed for good
/// on a node is placed again elsewhere), and reserves the task's resources there.
#[derive(Message)]
#[rtype(result = "Result<String, Unplaceable>")]
pub struct PlaceAvoiding {
    /// The task.
    pub task: TaskId,
    /// What it asks for.
    pub demand: Demand,
    /// The nodes to avoid.
    pub avoid: Vec<String>,
}

/// Handler for [`PlaceAvoiding`].
impl Handler<PlaceAvoiding> for SchedulerActor {
    type Result = Result<String, Unplaceable>;

    fn handle(&mut self, msg: PlaceAvoiding, _: &mut Context<Self>) -> Self::Result {
        self.place(msg.task, msg.demand, &msg.avoid)
    }
}

impl SchedulerActor {
    fn place(
        &mut self,
        task: TaskId,
        demand: Demand,
        avoid: &[String],
    ) -> Result<String, Unplaceable> {
        self.release(task);
        let taken = if demand.ports.is_empty() {
            HashSet::new()
        } else {
            self.taken(&demand.ports)
        };
        let hosts = &self.hosts;
        let port_free = |n: &NodeView, port: u16| {
            let host = hosts.get(n.name()).map_or(n.name(), String::as_str);
            !taken.contains(&(host.to_string(), port))
        };
        // The map gives the nodes in name order.
        let elsewhere = self
            .nodes
            .values()
            .filter(|n| !avoid.iter().any(|a| a == n.name()));
        let node = match self
            .scheduler
            .select_in_name_order(&demand, elsewhere, port_free)
        {
            Ok(node) => node,
            // No other node fits: an avoided one is better than none.
            Err(_) if !avoid.is_empty() => {
                self.scheduler
                    .select_in_name_order(&demand, self.nodes.values(), port_free)?
            }
            Err(e) => return Err(e),
        };
        self.reserve(task, node.clone(), demand.resources, demand.ports);
        Ok(node)
    }
}

/// Records that a task holds resources on a node (after a manager restart).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reserve {
    /// The task.
    pub task: TaskId,
    /// Its node.
    pub node: String,
    /// What it reserves.
    pub demand: Resources,
    /// The fixed host ports it holds.
    pub ports: Vec<u16>,
}

/// Handler for [`Reserve`].
impl Handler<Reserve> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Reserve, _: &mut Context<Self>) {
        self.reserve(msg.task, msg.node, msg.demand, msg.ports);
    }
}

/// Frees what a task reserved (it ended, or its placement failed). Releasing twice is harmless.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release(pub TaskId);

/// Handler for [`Release`].
impl Handler<Release> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, Release(task): Release, _: &mut Context<Self>) {
        self.release(task);
    }
}

/// Forgets a node (its tasks were released first).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveNode(pub String);

/// Handler for [`RemoveNode`].
impl Handler<RemoveNode> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, RemoveNode(name): RemoveNode, _: &mut Context<Self>) {
        self.nodes.remove(&name);
        self.set_host(&name, None);
    }
}

/// Every node as the scheduler sees it, by name.
#[derive(Message)]
#[rtype(result = "Vec<NodeView>")]
pub struct Snapshot;

/// Handler for [`Snapshot`].
impl Handler<Snapshot> for SchedulerActor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.nodes.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks that each fit alone but not together never both land on the same node.
    #[actix_rt::test]
    async fn placing_reserves_so_the_last_gigabyte_is_taken_once() {
        let gib = 1 << 30;
        let scheduler = SchedulerActor::new(Algorithm::Epvm).start();
        scheduler
            .send(UpsertNode {
                name: "a".into(),
                capacity: Resources {
                    cpu: 2.0,
                    memory: 3 * gib,
                    disk: 0,
                },
                ready: true,
                eligible: true,
                host: "local".into(),
            })
            .await
            .unwrap();
        let mut t1 = Task::new("t1", "img");
        t1.memory = 2 * gib;
        let mut t2 = t1.clone();
        t2.id = TaskId::new_v4();
        assert_eq!(
            scheduler.send(Place(t1.clone())).await.unwrap().unwrap(),
            "a"
        );
        let err = scheduler
            .send(Place(t2.clone()))
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err.0, "no node has 2 GiB free memory (most free: 1 GiB)");
        scheduler.send(Release(t1.id)).await.unwrap();
        scheduler.send(Release(t1.id)).await.unwrap();
        assert_eq!(scheduler.send(Place(t2)).await.unwrap().unwrap(), "a");
        let views = scheduler.send(Snapshot).await.unwrap();
        assert_eq!(views[0].reserved().memory, 2 * gib);
        assert_eq!(views[0].task_count(), 1);
    }

    /// Reservations recorded before their node is known (a manager restart) count once it is.
    #[actix_rt::test]
    async fn reservations_made_before_the_node_joins_count() {
        let scheduler = SchedulerActor::new(Algorithm::Epvm).start();
        let demand = Resources {
            cpu: 0.5,
            memory: 1 << 30,
            disk: 0,
        };
        scheduler.do_send(Reserve {
            task: TaskId::new_v4(),
            node: "a".into(),
            demand,
            ports: Vec::new(),
        });
        let capacity = Resources {
            cpu: 1.0,
            memory: 2 << 30,
            disk: 0,
        };
        scheduler
            .send(UpsertNode {
                name: "a".into(),
                capacity,
                ready: true,
                eligible: true,
                host: "local".into(),
            })
            .await
            .unwrap();
        let views = scheduler.send(Snapshot).await.unwrap();
        assert_eq!((views[0].reserved(), views[0].task_count()), (demand, 1));
    }

    /// Tasks that ask for no CPU still spread: each one makes its node costlier for E-PVM.
    #[actix_rt::test]
    async fn epvm_spreads_tasks_that_ask_for_nothing() {
        let scheduler = SchedulerActor::new(Algorithm::Epvm).start();
        for name in ["a", "b", "c"] {
            let capacity = Resources {
                cpu: 1.0,
                memory: 1 << 30,
                disk: 0,
            };
            scheduler.do_send(UpsertNode {
                name: name.into(),
                capacity,
                ready: true,
                eligible: true,
                host: "local".into(),
            });
        }
        let mut picks = Vec::new();
        for i in 0..6 {
            picks.push(
                scheduler
                    .send(Place(Task::new(format!("t{i}"), "img")))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(picks, ["a", "b", "c", "a", "b", "c"]);
    }

    /// A task asking for a fixed host port goes only where that port is free on the machine;
    /// nodes sharing a machine share its ports, and a released port is free again.
    #[actix_rt::test]
    async fn fixed_host_ports_are_taken_once_per_machine() {
        let scheduler = SchedulerActor::new(Algorithm::Epvm).start();
        let capacity = Resources {
            cpu: 4.0,
            memory: 1 << 30,
            disk: 0,
        };
        for (name, host) in [("a", "local"), ("b", "local"), ("c", "10.0.0.9")] {
            scheduler.do_send(UpsertNode {
                name: name.into(),
                capacity,
                ready: true,
                eligible: true,
                host: host.into(),
            });
        }
        let web = |name: &str| {
            let mut t = Task::new(name, "img");
            t.port_bindings.insert("7777/tcp".into(), "7777".into());
            t
        };
        let first = web("w1");
        let on_first = scheduler.send(Place(first.clone())).await.unwrap().unwrap();
        let on_second = scheduler.send(Place(web("w2"))).await.unwrap().unwrap();
        assert_ne!(
            on_first == "c",
            on_second == "c",
            "one on the shared machine, one on the other"
        );
        let refused = scheduler.send(Place(web("w3"))).await.unwrap().unwrap_err();
        assert_eq!(
            refused.0,
            "host port 7777 is taken on every node with room for the task"
        );
        scheduler.send(Release(first.id)).await.unwrap();
        assert!(scheduler.send(Place(web("w4"))).await.unwrap().is_ok());
    }

    /// Nodes sharing a machine spread their tasks by reservation whatever the machine's
    /// measured usage (it is the same machine's, and says nothing of one against another);
    /// a node alone on its machine is still scored by what is measured there.
    #[actix_rt::test]
    async fn a_shared_machines_usage_does_not_pick_among_its_nodes() {
        let scheduler = SchedulerActor::new(Algorithm::Epvm).start();
        let capacity = Resources {
            cpu: 2.0,
            memory: 4 << 30,
            disk: 0,
        };
        let join = |name: &str, host: &str| UpsertNode {
            name: name.into(),
            capacity,
            ready: true,
            eligible: true,
            host: host.into(),
        };
        scheduler.do_send(join("node-1", "local"));
        // Measured while node-1 had the machine to itself, then on its own again.
        scheduler.do_send(NodeUsage {
            name: "node-1".into(),
            cpu: 0.3,
            memory: 0.3,
        });
        scheduler.do_send(join("node-2", "local"));
        // A busy machine, sampled a moment apart by each node: node-2 saw it busier.
        for (name, cpu) in [("node-1", 0.90), ("node-2", 0.93)] {
            scheduler.do_send(NodeUsage {
                name: name.into(),
                cpu,
                memory: 0.5,
            });
        }
        let half = |name: &str| {
            let mut t = Task::new(name, "img");
            t.cpu = 0.5;
            t.memory = 256 << 20;
            t
        };
        let mut picks = Vec::new();
        for name in ["api-1", "api-2", "api-3", "api-4"] {
            picks.push(scheduler.send(Place(half(name))).await.unwrap().unwrap());
        }
        assert_eq!(picks, ["node-1", "node-2", "node-1", "node-2"]);

        // A node alone on its machine: its measured load steers tasks away from it.
        scheduler.do_send(join("node-3", "10.0.0.9"));
        scheduler.do_send(NodeUsage {
            name: "node-3".into(),
            cpu: 0.95,
            memory: 0.9,
        });
        let pick = scheduler.send(Place(half("api-5"))).await.unwrap().unwrap();
        assert_ne!(pick, "node-3");
        let views = scheduler.send(Snapshot).await.unwrap();
        assert_eq!(views[2].reserved(), Resources::default());
    }
}
