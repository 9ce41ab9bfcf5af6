//! Placement cost at 10, 100, 1,000 and 10,000 nodes: each algorithm beside two baselines
//! measured in the same run: the one-pass floor (a bare loop over the same nodes that keeps the
//! one with the most free memory among those that fit: what any placement must at least do) and
//! E-PVM's formula computed in full for every node. E-PVM's picks are checked against the
//! formula as written before anything is timed.
//!
//! Run with `cargo bench --bench scheduler`. Prints decisions/s and ratios to the floor.

use std::hint::black_box;
use std::time::Instant;

use cube_actors::resources::Resources;
use cube_actors::scheduler::{Algorithm, NodeView, Scheduler, epvm_cost};
use cube_actors::task::Task;

const SIZES: [usize; 4] = [10, 100, 1000, 10_000];

/// Decisions timed at `nodes` nodes: about 20 million node visits each.
fn decisions(nodes: usize) -> usize {
    (20_000_000 / nodes).clamp(2_000, 200_000)
}

fn cluster(n: usize) -> Vec<NodeView> {
    (0..n)
        .map(|i| {
            let capacity = Resources {
                cpu: 8.0,
                memory: 32 << 30,
                disk: 100 << 30,
            };
            let share = (i % 97) as f64 / 100.0;
            let reserved = Resources {
                cpu: capacity.cpu * share,
                memory: (capacity.memory as f64 * share) as u64,
                disk: 0,
            };
            NodeView::new(format!("node-{i:05}"), capacity)
                .with_reserved(reserved, i % 7)
                .with_usage((i % 89) as f64 / 100.0, (i % 83) as f64 / 100.0)
        })
        .collect()
}

/// The floor: one pass over the nodes, keeping the feasible one with the most free memory.
fn one_pass(task: &Task, nodes: &[NodeView]) -> String {
    let demand = Resources::of(task);
    let mut best: Option<&NodeView> = None;
    for node in nodes {
        if node.fits(demand) && best.is_none_or(|b| node.free().memory > b.free().memory) {
            best = Some(node);
        }
    }
    best.map(|n| n.name().to_string()).unwrap_or_default()
}

/// The formula in full: every candidate's cost computed (four `powf` per node).
fn full_formula(task: &Task, nodes: &[NodeView]) -> String {
    let demand = Resources::of(task);
    let mut best: Option<(&NodeView, f64)> = None;
    for node in nodes.iter().filter(|n| n.fits(demand)) {
        let cost = epvm_cost(node, demand);
        if best.is_none_or(|(_, b)| cost < b) {
            best = Some((node, cost));
        }
    }
    best.map(|(n, _)| n.name().to_string()).unwrap_or_default()
}

/// Decisions per second of `decide` over `n` decisions.
fn rate(n: usize, mut decide: impl FnMut(&Task) -> String, tasks: &[Task]) -> f64 {
    let start = Instant::now();
    for task in tasks.iter().cycle().take(n) {
        black_box(decide(task));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let tasks: Vec<Task> = (0..64)
        .map(|i| {
            let mut t = Task::new(format!("t{i}"), "img");
            t.cpu = (i % 4) as f64 * 0.25;
            t.memory = ((i % 8) as u64 + 1) << 28;
            t
        })
        .collect();
    println!(
        "{:>6}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}   ratios to the floor (E-PVM cached / full)",
        "nodes", "floor/s", "E-PVM/s", "E-PVM full/s", "round-robin/s", "greedy/s"
    );
    for size in SIZES {
        let nodes = cluster(size);
        for task in &tasks {
            let mut s = Scheduler::new(Algorithm::Epvm);
            assert_eq!(
                s.select(task, &nodes).unwrap(),
                full_formula(task, &nodes),
                "E-PVM picks what the formula picks"
            );
        }
        let n = decisions(size);
        let floor = rate(n, |t| one_pass(t, &nodes), &tasks);
        let mut epvm = Scheduler::new(Algorithm::Epvm);
        let cached = rate(n, |t| epvm.select(t, &nodes).unwrap(), &tasks);
        let full = rate(n, |t| full_formula(t, &nodes), &tasks);
        let mut rr = Scheduler::new(Algorithm::RoundRobin);
        let round_robin = rate(n, |t| rr.select(t, &nodes).unwrap(), &tasks);
        let mut greedy = Scheduler::new(Algorithm::Greedy);
        let greedy = rate(n, |t| greedy.select(t, &nodes).unwrap(), &tasks);
        println!(
            "{size:>6}  {floor:>12.0}  {cached:>12.0}  {full:>12.0}  {round_robin:>12.0}  {greedy:>12.0}   E-PVM {:.2}x / {:.2}x slower than the floor",
            floor / cached,
            floor / full
        );
    }
}
