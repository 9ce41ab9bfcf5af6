//! Placement rules, checked on fixture nodes and on random clusters.

use proptest::prelude::*;

use super::*;

const GIB: u64 = 1 << 30;

fn node(name: &str, cpu: f64, mem_gib: u64) -> NodeView {
    NodeView::new(
        name,
        Resources {
            cpu,
            memory: mem_gib * GIB,
            disk: 100 * GIB,
        },
    )
}

fn task(cpu: f64, mem: u64) -> Task {
    let mut t = Task::new("t", "img");
    t.cpu = cpu;
    t.memory = mem;
    t
}

fn check(algorithm: Algorithm, t: &Task, nodes: &[NodeView]) -> Result<String, Unplaceable> {
    Scheduler::new(algorithm).select(t, nodes)
}

const ALL: [Algorithm; 3] = [Algorithm::RoundRobin, Algorithm::Epvm, Algorithm::Greedy];

#[test]
fn round_robin_cycles_through_ready_nodes_by_name() {
    let nodes = [
        node("c", 4.0, 8),
        node("a", 4.0, 8),
        node("b", 4.0, 8).with_status(false, true),
    ];
    let mut s = Scheduler::new(Algorithm::RoundRobin);
    let picks: Vec<_> = (0..5)
        .map(|_| s.select(&task(0.0, 0), &nodes).unwrap())
        .collect();
    assert_eq!(picks, ["a", "c", "a", "c", "a"]);
}

#[test]
fn equal_scores_go_to_the_first_node_by_name_whatever_order_the_nodes_come_in() {
    let nodes = [node("c", 4.0, 8), node("a", 4.0, 8), node("b", 4.0, 8)];
    for algorithm in [Algorithm::Epvm, Algorithm::Greedy] {
        assert_eq!(check(algorithm, &task(1.0, GIB), &nodes).unwrap(), "a");
    }
}

#[test]
fn a_node_without_room_is_never_chosen() {
    let full = node("a", 4.0, 8).with_reserved(
        Resources {
            cpu: 3.5,
            memory: 2 * GIB,
            disk: 0,
        },
        3,
    );
    let roomy = node("b", 4.0, 8);
    for algorithm in ALL {
        assert_eq!(
            check(algorithm, &task(1.0, GIB), &[full.clone(), roomy.clone()]).unwrap(),
            "b",
            "{algorithm}"
        );
    }
}

#[test]
fn unreachable_or_ineligible_nodes_are_never_chosen() {
    let down = node("a", 64.0, 256).with_status(false, true);
    let drained = node("b", 64.0, 256).with_status(true, false);
    let small = node("c", 1.0, 1);
    for algorithm in ALL {
        assert_eq!(
            check(
                algorithm,
                &task(0.5, GIB / 2),
                &[down.clone(), drained.clone(), small.clone()]
            )
            .unwrap(),
            "c"
        );
        let err = check(
            algorithm,
            &task(0.5, GIB / 2),
            &[down.clone(), drained.clone()],
        )
        .unwrap_err();
        assert_eq!(err.0, "none of the 2 nodes is ready and eligible");
    }
}

#[test]
fn epvm_prefers_the_node_where_the_added_load_costs_least() {
    let busy = node("a", 4.0, 8).with_reserved(
        Resources {
            cpu: 2.0,
            memory: 6 * GIB,
            disk: 0,
        },
        2,
    );
    let idle = node("b", 4.0, 8);
    assert_eq!(
        check(Algorithm::Epvm, &task(1.0, GIB), &[busy, idle]).unwrap(),
        "b"
    );
}

#[test]
fn epvm_cpu_usage_changes_its_choice() {
    // Same capacity and reservations; only the measured CPU differs, and it decides.
    let a = node("a", 4.0, 8).with_usage(0.9, 0.2);
    let b = node("b", 4.0, 8).with_usage(0.1, 0.2);
    assert_eq!(
        check(Algorithm::Epvm, &task(1.0, GIB), &[a.clone(), b.clone()]).unwrap(),
        "b"
    );
    let a = a.with_usage(0.1, 0.2);
    let b = b.with_usage(0.9, 0.2);
    assert_eq!(
        check(Algorithm::Epvm, &task(1.0, GIB), &[a, b]).unwrap(),
        "a"
    );
    // Even a task that asks for no CPU is charged a share, so CPU still counts.
    let a = node("a", 4.0, 8).with_usage(0.8, 0.2);
    let b = node("b", 4.0, 8).with_usage(0.3, 0.2);
    assert_eq!(
        check(Algorithm::Epvm, &task(0.0, GIB), &[a, b]).unwrap(),
        "b"
    );
}

#[test]
fn greedy_picks_the_least_loaded_node_after_placement() {
    let a = node("a", 4.0, 8).with_reserved(
        Resources {
            cpu: 1.0,
            memory: 0,
            disk: 0,
        },
        1,
    );
    let b = node("b", 4.0, 8).with_reserved(
        Resources {
            cpu: 0.0,
            memory: 4 * GIB,
            disk: 0,
        },
        1,
    );
    assert_eq!(
        check(Algorithm::Greedy, &task(0.5, 0), &[a, b]).unwrap(),
        "a"
    );
}

#[test]
fn unplaceable_tasks_say_which_resource_is_short() {
    let nodes = [node("a", 2.0, 1), node("b", 2.0, 1)];
    let err = check(Algorithm::Epvm, &task(0.0, 2 * GIB), &nodes).unwrap_err();
    assert_eq!(err.0, "no node has 2 GiB free memory (most free: 1 GiB)");
    let err = check(Algorithm::Epvm, &task(3.0, 0), &nodes).unwrap_err();
    assert_eq!(err.0, "no node has 3 free CPU cores (most free: 2)");
    let err = check(Algorithm::Epvm, &task(0.0, 0), &[]).unwrap_err();
    assert_eq!(err.0, "no worker node has joined the cluster");
}

fn arb_node(i: usize) -> impl Strategy<Value = NodeView> {
    (
        1u32..16,
        1u64..32,
        0.0f64..1.0,
        0.0f64..1.0,
        0.0f64..1.0,
        any::<bool>(),
        0u8..10,
    )
        .prop_map(
            move |(cpu, mem, reserved_share, cpu_use, mem_use, eligible, unready)| {
                let capacity = Resources {
                    cpu: f64::from(cpu),
                    memory: mem * GIB,
                    disk: 50 * GIB,
                };
                let reserved = Resources {
                    cpu: capacity.cpu * reserved_share,
                    memory: (capacity.memory as f64 * reserved_share) as u64,
                    disk: 0,
                };
                NodeView::new(format!("n{i:03}"), capacity)
                    .with_reserved(reserved, 1)
                    .with_usage(cpu_use, mem_use)
                    .with_status(unready != 0, eligible || unready == 1)
            },
        )
}

fn arb_cluster() -> impl Strategy<Value = Vec<NodeView>> {
    (0usize..12).prop_flat_map(|n| (0..n).map(arb_node).collect::<Vec<_>>())
}

proptest! {
    /// Whatever the cluster, no algorithm ever places a task on a node that is not ready,
    /// not eligible or without room; and a task is refused only when no node could take it.
    #[test]
    fn no_algorithm_ever_overcommits(nodes in arb_cluster(), cpu in 0.0f64..8.0, mem_gib in 0u64..16) {
        let t = task(cpu, mem_gib * GIB);
        let demand = Resources::of(&t);
        let possible = nodes.iter().any(|n| n.ready && n.eligible && n.fits(demand));
        for algorithm in ALL {
            match check(algorithm, &t, &nodes) {
                Ok(name) => {
                    let chosen = nodes.iter().find(|n| n.name == name).unwrap();
                    prop_assert!(chosen.ready && chosen.eligible && chosen.fits(demand));
                }
                Err(_) => prop_assert!(!possible),
            }
        }
    }

    /// The cached E-PVM terms pick the same node as the formula computed in full.
    #[test]
    fn cached_epvm_picks_what_the_full_formula_picks(nodes in arb_cluster(), cpu in 0.0f64..2.0, mem_gib in 0u64..4) {
        let t = task(cpu, mem_gib * GIB);
        let demand = Resources::of(&t);
        let mut candidates: Vec<&NodeView> =
            nodes.iter().filter(|n| n.ready && n.eligible && n.fits(demand)).collect();
        candidates.sort_by(|a, b| a.name.cmp(&b.name));
        if let Ok(name) = check(Algorithm::Epvm, &t, &nodes) {
            let best = candidates.iter().map(|n| epvm_cost(n, demand)).fold(f64::INFINITY, f64::min);
            let chosen = nodes.iter().find(|n| n.name == name).unwrap();
            prop_assert!((epvm_cost(chosen, demand) - best).abs() < 1e-9);
        }
    }
}
