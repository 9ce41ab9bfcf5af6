//! Placement cost at 1,000 nodes: E-PVM with cached per-node terms against the formula computed
//! in full for every node (the baseline, measured in the same run), plus round-robin and greedy.
//!
//! Run with `cargo bench --bench scheduler`. Prints ns per decision and the ratio to the baseline.

use std::hint::black_box;
use std::time::Instant;

use cube_actors::resources::Resources;
use cube_actors::scheduler::{Algorithm, NodeView, Scheduler, epvm_cost};
use cube_actors::task::Task;

const NODES: usize = 1000;
const DECISIONS: usize = 20_000;

fn cluster() -> Vec<NodeView> {
    (0..NODES)
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
            NodeView::new(format!("node-{i:04}"), capacity)
                .with_reserved(reserved, i % 7)
                .with_usage((i % 89) as f64 / 100.0, (i % 83) as f64 / 100.0)
        })
        .collect()
}

/// The baseline: every candidate's cost computed in full (four `powf` per node).
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

fn time(label: &str, mut decide: impl FnMut(&Task) -> String, tasks: &[Task]) -> f64 {
    let start = Instant::now();
    for task in tasks.iter().cycle().take(DECISIONS) {
        black_box(decide(task));
    }
    let ns = start.elapsed().as_nanos() as f64 / DECISIONS as f64;
    println!("{label:<32} {:>10.0} ns/decision", ns);
    ns
}

fn main() {
    let nodes = cluster();
    let tasks: Vec<Task> = (0..64)
        .map(|i| {
            let mut t = Task::new(format!("t{i}"), "img");
            t.cpu = (i % 4) as f64 * 0.25;
            t.memory = ((i % 8) as u64 + 1) << 28;
            t
        })
        .collect();
    for task in &tasks {
        let mut s = Scheduler::new(Algorithm::Epvm);
        assert_eq!(
            s.select(task, &nodes).unwrap(),
            full_formula(task, &nodes),
            "same picks"
        );
    }
    println!("{NODES} nodes, {DECISIONS} decisions each");
    let baseline = time(
        "E-PVM, full formula (baseline)",
        |t| full_formula(t, &nodes),
        &tasks,
    );
    let mut epvm = Scheduler::new(Algorithm::Epvm);
    let cached = time(
        "E-PVM, cached terms",
        |t| epvm.select(t, &nodes).unwrap(),
        &tasks,
    );
    let mut rr = Scheduler::new(Algorithm::RoundRobin);
    let round_robin = time("round-robin", |t| rr.select(t, &nodes).unwrap(), &tasks);
    let mut greedy = Scheduler::new(Algorithm::Greedy);
    let greedy = time("greedy", |t| greedy.select(t, &nodes).unwrap(), &tasks);
    println!(
        "ratios to the baseline: cached E-PVM {:.2}, round-robin {:.2}, greedy {:.2}",
        cached / baseline,
        round_robin / baseline,
        greedy / baseline
    );
}
