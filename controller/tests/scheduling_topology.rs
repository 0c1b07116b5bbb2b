//! Topology behaviour over Karpenter's fake catalog: spread constraints (zone, hostname,
//! capacity type, custom keys; DoNotSchedule and ScheduleAnyway), pod affinity and
//! anti-affinity (required, preferred, inverse), and the relaxation order. Outcomes follow
//! Karpenter's topology suite (intent ported, not code).

mod scheduling_support;

use std::collections::BTreeMap;

use karpenter::scheduling::Decision;
use scheduling_support::*;
use serde_json::json;

const ZONE: &str = "topology.kubernetes.io/zone";
const HOST: &str = "kubernetes.io/hostname";
const CT: &str = "karpenter.sh/capacity-type";

fn per_zone(d: &Decision) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in &d.nodes {
        assert_eq!(n.zones.len(), 1, "node not pinned to a zone: {n:?}");
        *m.entry(n.zones[0].clone()).or_insert(0) += n.pods.len();
    }
    m
}

fn counts(d: &Decision) -> Vec<usize> {
    let mut v: Vec<usize> = per_zone(d).values().copied().collect();
    v.sort();
    v
}

fn web() -> PodB {
    pod("web").labels(json!({"app": "web"}))
}

// --- zone spread ---

#[test]
fn zone_spread_balances_three_zones() {
    let d = solve(
        &web()
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(6),
    );
    assert_eq!(d.scheduled_count(), 6);
    assert_eq!(counts(&d), [2, 2, 2]);
}

#[test]
fn zone_spread_within_provisioner_zones() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1", "test-zone-2"]}]}),
    )]);
    let d = e.solve(
        &web()
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(4),
    );
    let z = per_zone(&d);
    assert_eq!(z.get("test-zone-1"), Some(&2));
    assert_eq!(z.get("test-zone-2"), Some(&2));
}

#[test]
fn zone_spread_max_skew_two() {
    let d = solve(
        &web()
            .spread(ZONE, 2, "DoNotSchedule", json!({"app": "web"}))
            .times(7),
    );
    let c = counts(&d);
    assert_eq!(c.iter().sum::<usize>(), 7);
    assert!(c[c.len() - 1] - c[0] <= 2, "{c:?}");
}

#[test]
fn zone_spread_respects_pod_zone_requirement() {
    let d = solve(
        &web()
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .required(json!([[{"key": ZONE, "operator": "In", "values": ["test-zone-1", "test-zone-2"]}]]))
            .times(4),
    );
    assert_eq!(counts(&d), [2, 2]);
}

#[test]
fn zone_spread_only_counts_selected_pods() {
    let mut pods = pod("other")
        .labels(json!({"app": "other"}))
        .selector(json!({ZONE: "test-zone-1"}))
        .times(3);
    pods.extend(
        web()
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(3),
    );
    let d = solve(&pods);
    assert_eq!(d.scheduled_count(), 6);
}

#[test]
fn zone_spread_counts_existing_pods() {
    let e = env(vec![default_prov()]).existing(
        node(
            "n1",
            json!({ZONE: "test-zone-1", HOST: "n1"}),
            json!({"cpu": "1", "memory": "1Gi", "pods": "2"}),
            json!([]),
        ),
        vec![
            web()
                .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
                .spec("nodeName", json!("n1"))
                .build(),
            pod("web2")
                .labels(json!({"app": "web"}))
                .spec("nodeName", json!("n1"))
                .build(),
        ],
    );
    let d = e.solve(
        &web()
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(2),
    );
    let z = per_zone(&d);
    assert_eq!(z.get("test-zone-2"), Some(&1));
    assert_eq!(z.get("test-zone-3"), Some(&1));
}

#[test]
fn zone_spread_violation_is_explained() {
    let full = json!({"cpu": "0", "memory": "0", "pods": "0"});
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1"]}]}),
    )])
    .existing(
        node("n1", json!({ZONE: "test-zone-1"}), full.clone(), json!([])),
        (0..3)
            .map(|i| {
                pod(&format!("w{i}"))
                    .labels(json!({"app": "web"}))
                    .spec("nodeName", json!("n1"))
                    .build()
            })
            .collect(),
    )
    .existing(
        node("n2", json!({ZONE: "test-zone-2"}), full, json!([])),
        vec![pod("w9")
            .labels(json!({"app": "web"}))
            .spec("nodeName", json!("n2"))
            .build()],
    );
    let d = e.solve(&[web()
        .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
        .build()]);
    assert_eq!(
        reason(&d, "web", "default"),
        "zone spread maxSkew 1 would be violated: test-zone-1=3 test-zone-2=1"
    );
}

#[test]
fn schedule_anyway_spread_is_relaxed_when_needed() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1"]}]}),
    )])
    .existing(
        node(
            "n1",
            json!({ZONE: "test-zone-2"}),
            json!({"cpu": "0", "pods": "0"}),
            json!([]),
        ),
        vec![],
    );
    // Zone 2 exists (empty) but cannot take pods: the second pod violates skew 1.
    let d = e.solve(
        &web()
            .spread(ZONE, 1, "ScheduleAnyway", json!({"app": "web"}))
            .times(2),
    );
    assert_eq!(d.scheduled_count(), 2);
    assert!(
        d.relaxed
            .iter()
            .any(|r| r.relaxed[0].contains("ScheduleAnyway")),
        "{:?}",
        d.relaxed
    );
}

#[test]
fn schedule_anyway_spread_is_honoured_when_possible() {
    let d = solve(
        &web()
            .spread(ZONE, 1, "ScheduleAnyway", json!({"app": "web"}))
            .times(3),
    );
    assert_eq!(counts(&d), [1, 1, 1]);
    assert!(d.relaxed.is_empty());
}

// --- hostname and capacity-type spread ---

#[test]
fn hostname_spread_one_per_node() {
    let d = solve(
        &web()
            .req("100m", "")
            .spread(HOST, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(4),
    );
    assert_eq!(d.nodes.len(), 4);
}

#[test]
fn hostname_spread_skew_two() {
    let d = solve(
        &web()
            .req("100m", "")
            .spread(HOST, 2, "DoNotSchedule", json!({"app": "web"}))
            .times(4),
    );
    assert_eq!(d.nodes.len(), 2);
}

#[test]
fn capacity_type_spread() {
    let d = solve(
        &web()
            .spread(CT, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(2),
    );
    let mut cts: Vec<&str> = d.nodes.iter().map(|n| n.capacity_type.as_str()).collect();
    cts.sort();
    assert_eq!(cts, ["on-demand", "spot"]);
}

#[test]
fn zone_and_hostname_spread_together() {
    let d = solve(
        &web()
            .req("100m", "")
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .spread(HOST, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(6),
    );
    assert_eq!(d.nodes.len(), 6);
    assert_eq!(counts(&d), [2, 2, 2]);
}

#[test]
fn custom_key_spread_over_provisioner_values() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": "rack", "operator": "In", "values": ["r1", "r2"]}]}),
    )]);
    let d = e.solve(
        &web()
            .spread("rack", 1, "DoNotSchedule", json!({"app": "web"}))
            .times(4),
    );
    assert_eq!(d.scheduled_count(), 4);
    assert_eq!(d.nodes.len(), 2);
}

#[test]
fn custom_key_spread_without_domains_fails() {
    let d = solve(&[web()
        .spread("rack", 1, "DoNotSchedule", json!({"app": "web"}))
        .build()]);
    assert!(!scheduled(&d, "web"));
}

// --- pod affinity ---

#[test]
fn hostname_affinity_to_pending_pod() {
    let pods = vec![
        pod("db")
            .labels(json!({"app": "db"}))
            .req("100m", "")
            .build(),
        pod("app")
            .req("2", "")
            .pod_term("podAffinity", HOST, json!({"app": "db"}))
            .build(),
    ];
    let d = solve(&pods);
    assert_eq!(node_of(&d, "db").pods.len(), 2, "{d:?}");
}

#[test]
fn zone_affinity_to_existing_pod() {
    let e = env(vec![default_prov()]).existing(
        node(
            "n1",
            json!({ZONE: "test-zone-2"}),
            json!({"cpu": "0", "pods": "0"}),
            json!([]),
        ),
        vec![pod("db")
            .labels(json!({"app": "db"}))
            .spec("nodeName", json!("n1"))
            .build()],
    );
    let d = e.solve(&[pod("app")
        .pod_term("podAffinity", ZONE, json!({"app": "db"}))
        .build()]);
    assert_eq!(node_of(&d, "app").zones, ["test-zone-2"]);
}

#[test]
fn affinity_without_target_is_unschedulable() {
    let d = solve(&[pod("app")
        .pod_term("podAffinity", ZONE, json!({"app": "db"}))
        .build()]);
    let r = reason(&d, "app", "default");
    assert!(r.contains("no pod matches"), "{r}");
}

#[test]
fn zone_self_affinity_keeps_one_zone() {
    let d = solve(
        &web()
            .req("1", "")
            .pod_term("podAffinity", ZONE, json!({"app": "web"}))
            .times(6),
    );
    assert_eq!(d.scheduled_count(), 6);
    assert_eq!(per_zone(&d).len(), 1);
}

#[test]
fn hostname_self_affinity_one_node() {
    let d = solve(
        &web()
            .req("100m", "")
            .pod_term("podAffinity", HOST, json!({"app": "web"}))
            .times(3),
    );
    assert_eq!(d.nodes.len(), 1);
}

#[test]
fn affinity_respects_namespace() {
    let pods = vec![
        pod("db").ns("other").labels(json!({"app": "db"})).build(),
        pod("app")
            .pod_term("podAffinity", HOST, json!({"app": "db"}))
            .build(),
    ];
    let d = solve(&pods);
    assert!(!scheduled(&d, "app"));
}

// --- pod anti-affinity ---

#[test]
fn hostname_self_anti_affinity_spreads_nodes() {
    let d = solve(
        &web()
            .req("100m", "")
            .pod_term("podAntiAffinity", HOST, json!({"app": "web"}))
            .times(3),
    );
    assert_eq!(d.nodes.len(), 3);
}

#[test]
fn zone_self_anti_affinity_limits_to_zone_count() {
    let d = solve(
        &web()
            .pod_term("podAntiAffinity", ZONE, json!({"app": "web"}))
            .times(4),
    );
    assert_eq!(d.scheduled_count(), 3);
    assert_eq!(d.unschedulable.len(), 1);
    assert_eq!(counts(&d), [1, 1, 1]);
}

#[test]
fn anti_affinity_avoids_existing_pod_zone() {
    let e = env(vec![default_prov()]).existing(
        node(
            "n1",
            json!({ZONE: "test-zone-1"}),
            json!({"cpu": "0", "pods": "0"}),
            json!([]),
        ),
        vec![pod("db")
            .labels(json!({"app": "db"}))
            .spec("nodeName", json!("n1"))
            .build()],
    );
    let d = e.solve(&[pod("app")
        .pod_term("podAntiAffinity", ZONE, json!({"app": "db"}))
        .build()]);
    assert_ne!(node_of(&d, "app").zones, ["test-zone-1"]);
}

#[test]
fn inverse_anti_affinity_from_existing_pod_hostname() {
    let e = env(vec![default_prov()]).existing(
        owned_node(
            "n1",
            json!({ZONE: "test-zone-1"}),
            json!({"cpu": "4", "memory": "4Gi", "pods": "10"}),
            json!([]),
        ),
        vec![pod("guard")
            .pod_term("podAntiAffinity", HOST, json!({"app": "web"}))
            .spec("nodeName", json!("n1"))
            .build()],
    );
    let d = e.solve(&[web().build()]);
    assert!(d.existing_node_of("default/web").is_none());
    assert!(scheduled(&d, "web"));
}

#[test]
fn inverse_anti_affinity_from_existing_pod_zone() {
    let e = env(vec![default_prov()]).existing(
        node(
            "n1",
            json!({ZONE: "test-zone-1"}),
            json!({"cpu": "0", "pods": "0"}),
            json!([]),
        ),
        vec![pod("guard")
            .pod_term("podAntiAffinity", ZONE, json!({"app": "web"}))
            .spec("nodeName", json!("n1"))
            .build()],
    );
    let d = e.solve(&web().times(4));
    assert_eq!(d.scheduled_count(), 4);
    assert!(!per_zone(&d).contains_key("test-zone-1"), "{d:?}");
}

#[test]
fn inverse_anti_affinity_between_pending_pods() {
    let pods = vec![
        pod("guard")
            .req("2", "")
            .pod_term("podAntiAffinity", HOST, json!({"app": "web"}))
            .build(),
        web().req("100m", "").build(),
    ];
    let d = solve(&pods);
    assert_eq!(d.nodes.len(), 2);
}

// --- preferences and relaxation ---

#[test]
fn preferred_anti_affinity_unsatisfiable_is_relaxed() {
    let d = solve(
        &web()
            .pref_pod_term("podAntiAffinity", 10, ZONE, json!({"app": "web"}))
            .times(4),
    );
    assert_eq!(d.scheduled_count(), 4);
    assert_eq!(d.relaxed.len(), 1, "{:?}", d.relaxed);
}

#[test]
fn preferred_affinity_honoured() {
    let pods = vec![
        pod("db")
            .labels(json!({"app": "db"}))
            .selector(json!({ZONE: "test-zone-3"}))
            .build(),
        pod("app")
            .pref_pod_term("podAffinity", 10, ZONE, json!({"app": "db"}))
            .build(),
    ];
    let d = solve(&pods);
    assert_eq!(node_of(&d, "app").zones, ["test-zone-3"]);
}

#[test]
fn preferred_hostname_anti_affinity_spreads() {
    let d = solve(
        &web()
            .req("100m", "")
            .pref_pod_term("podAntiAffinity", 10, HOST, json!({"app": "web"}))
            .times(3),
    );
    assert_eq!(d.nodes.len(), 3);
    assert!(d.relaxed.is_empty());
}

#[test]
fn relaxation_order_pod_affinity_before_node_affinity() {
    let d = solve(&[pod("app")
        .pref_pod_term("podAffinity", 10, ZONE, json!({"app": "nothing"}))
        .preferred(&[(
            5,
            json!([{"key": ZONE, "operator": "In", "values": ["nowhere"]}]),
        )])
        .build()]);
    assert!(scheduled(&d, "app"));
    let r = &d.relaxed[0].relaxed;
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[0].contains("pod affinity"), "{r:?}");
    assert!(r[1].contains("node affinity"), "{r:?}");
}

#[test]
fn relaxation_order_anti_affinity_before_spread() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1"]}]}),
    )])
    .existing(
        node(
            "n1",
            json!({ZONE: "test-zone-1"}),
            json!({"cpu": "0", "pods": "0"}),
            json!([]),
        ),
        vec![web().spec("nodeName", json!("n1")).build()],
    )
    .existing(
        node(
            "n2",
            json!({ZONE: "test-zone-2"}),
            json!({"cpu": "0", "pods": "0"}),
            json!([]),
        ),
        vec![],
    );
    let d = e.solve(&[web()
        .pref_pod_term("podAntiAffinity", 10, ZONE, json!({"app": "web"}))
        .spread(ZONE, 1, "ScheduleAnyway", json!({"app": "web"}))
        .build()]);
    assert!(scheduled(&d, "web"));
    let r = &d.relaxed[0].relaxed;
    assert!(r[0].contains("anti-affinity"), "{r:?}");
    assert!(r[1].contains("ScheduleAnyway"), "{r:?}");
}

#[test]
fn topology_pods_are_not_moved_by_improvement() {
    let d = solve(
        &web()
            .req("1", "")
            .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
            .times(9),
    );
    assert_eq!(counts(&d), [3, 3, 3]);
}

// --- spread domains as kube-scheduler computes them (issue 13) ---

fn four_zone_env() -> Env {
    let types = karpenter::cloud::instance_types::parse_instance_types(
        "- name: m\n  capacity: {cpu: '4', memory: 8Gi, pods: '20'}\n  overhead: {}\n  offerings:\n  - {zone: us-east-1a, capacityType: on-demand, price: 0.1}\n  - {zone: us-east-1b, capacityType: on-demand, price: 0.1}\n  - {zone: us-east-1c, capacityType: on-demand, price: 0.1}\n  - {zone: us-east-1d, capacityType: on-demand, price: 0.1}\n",
    )
    .unwrap();
    env(vec![
        prov(
            "general",
            json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["us-east-1a", "us-east-1c"]}]}),
        ),
        prov(
            "team",
            json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["us-east-1b", "us-east-1d"]}],
                   "taints": [{"key": "team", "value": "x", "effect": "NoSchedule"}]}),
        ),
    ])
    .types(types)
}

#[test]
fn zones_only_a_tainted_provisioner_offers_are_not_domains() {
    // The reproduction: b and d come only from the team's tainted provisioner, which
    // these pods cannot use, so they spread over a and c.
    let pods = web()
        .req("1", "")
        .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
        .times(4);
    let d = four_zone_env().solve(&pods);
    assert!(d.unschedulable.is_empty(), "{d:?}");
    let z = per_zone(&d);
    assert_eq!(z.get("us-east-1a"), Some(&2), "{z:?}");
    assert_eq!(z.get("us-east-1c"), Some(&2), "{z:?}");
}

#[test]
fn fewer_domains_than_min_domains_make_the_global_minimum_zero() {
    let mut p = web()
        .req("1", "")
        .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}));
    p.0["spec"]["topologySpreadConstraints"][0]["minDomains"] = json!(3);
    let d = four_zone_env().solve(&p.times(3));
    assert_eq!(d.scheduled_count(), 2, "{d:?}");
    let u = &d.unschedulable[0];
    assert!(
        u.reasons["general"].contains("fewer than minDomains 3"),
        "{:?}",
        u.reasons
    );
}

// --- which nodes' pods a spread counts, and namespace selectors (issue 13) ---

/// A provisioner in zones a and c whose nodes carry `pool=web`, and an existing node in zone a
/// that Karpenter does not own, labelled `pool=batch`, tainted `dedicated=batch:NoSchedule`,
/// with two `app=web` pods.
fn batch_node_env() -> Env {
    let types = karpenter::cloud::instance_types::parse_instance_types(
        "- name: m\n  capacity: {cpu: '4', memory: 8Gi, pods: '20'}\n  overhead: {}\n  offerings:\n  - {zone: us-east-1a, capacityType: on-demand, price: 0.1}\n  - {zone: us-east-1c, capacityType: on-demand, price: 0.1}\n",
    )
    .unwrap();
    let n = node(
        "batch-1",
        json!({ZONE: "us-east-1a", HOST: "batch-1", "pool": "batch"}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "20"}),
        json!([{"key": "dedicated", "value": "batch", "effect": "NoSchedule"}]),
    );
    env(vec![prov(
        "general",
        json!({"labels": {"pool": "web"},
               "requirements": [{"key": ZONE, "operator": "In", "values": ["us-east-1a", "us-east-1c"]}]}),
    )])
    .types(types)
    .existing(n, web().times(2))
}

fn spread_pods(
    affinity_policy: &str,
    taints_policy: &str,
    node_selector: bool,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    let mut p = web()
        .req("1", "")
        .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}));
    p.0["spec"]["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = json!(affinity_policy);
    p.0["spec"]["topologySpreadConstraints"][0]["nodeTaintsPolicy"] = json!(taints_policy);
    if node_selector {
        p = p.selector(json!({"pool": "web"}));
    }
    let mut pods = p.times(2);
    for (i, pod) in pods.iter_mut().enumerate() {
        pod.metadata.name = Some(format!("new-{i}"));
    }
    pods
}

#[test]
fn spread_counts_only_pods_on_nodes_the_pod_affinity_admits() {
    // Honor (the default): batch-1 fails the pods' `pool=web` selector, so its two web pods do
    // not count and zone a is at 0 like zone c: one pod each, as kube-scheduler places them.
    let d = batch_node_env().solve(&spread_pods("Honor", "Ignore", true));
    assert!(d.unschedulable.is_empty(), "{d:?}");
    let z = per_zone(&d);
    assert_eq!(z.get("us-east-1a"), Some(&1), "{z:?}");
    assert_eq!(z.get("us-east-1c"), Some(&1), "{z:?}");
    // Ignore: they count (a=2), so both new pods go to c.
    let d = batch_node_env().solve(&spread_pods("Ignore", "Ignore", true));
    assert_eq!(per_zone(&d).get("us-east-1c"), Some(&2), "{d:?}");
    // Without a node selector the node passes Honor too, and its pods count.
    let d = batch_node_env().solve(&spread_pods("Honor", "Ignore", false));
    assert_eq!(per_zone(&d).get("us-east-1c"), Some(&2), "{d:?}");
}

#[test]
fn spread_counts_skip_tainted_nodes_under_node_taints_policy_honor() {
    // Honor: the pods do not tolerate batch-1's taint, so its pods do not count.
    let d = batch_node_env().solve(&spread_pods("Ignore", "Honor", false));
    let z = per_zone(&d);
    assert_eq!(z.get("us-east-1a"), Some(&1), "{z:?}");
    assert_eq!(z.get("us-east-1c"), Some(&1), "{z:?}");
    // Ignore (the default): a tainted node's pods count.
    let d = batch_node_env().solve(&spread_pods("Ignore", "Ignore", false));
    assert_eq!(per_zone(&d).get("us-east-1c"), Some(&2), "{d:?}");
    // Honor with a toleration: they count again.
    let mut pods = spread_pods("Ignore", "Honor", false);
    for p in &mut pods {
        p.spec.as_mut().unwrap().tolerations = Some(vec![serde_json::from_value(
            json!({"key": "dedicated", "operator": "Exists"}),
        )
        .unwrap()]);
    }
    let d = batch_node_env().solve(&pods);
    assert_eq!(per_zone(&d).get("us-east-1c"), Some(&2), "{d:?}");
}

#[test]
fn spread_counts_on_planned_nodes_follow_the_policy_too() {
    // Two larger web pods pinned to zone 1 are placed first; every planned node carries the
    // provisioner's pool=web, so for the spread pods (pool=web, Honor) zone 1 holds 2 and both
    // go to zone 2. Were planned nodes not counted, they would split 1/1.
    let mut pods = web()
        .req("2", "")
        .selector(json!({ZONE: "test-zone-1"}))
        .times(2);
    pods.extend(spread_pods("Honor", "Ignore", true));
    let d = env(vec![prov(
        "general",
        json!({"labels": {"pool": "web"},
               "requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1", "test-zone-2"]}]}),
    )])
    .solve(&pods);
    assert!(d.unschedulable.is_empty(), "{d:?}");
    for i in 0..2 {
        let n = node_of(&d, &format!("new-{i}"));
        assert_eq!(n.zones, ["test-zone-2"], "{d:?}");
    }
}

fn db_in(
    namespace: &str,
) -> (
    k8s_openapi::api::core::v1::Node,
    Vec<k8s_openapi::api::core::v1::Pod>,
) {
    let n = node(
        "db-1",
        json!({ZONE: "test-zone-1", HOST: "db-1"}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "20"}),
        json!([]),
    );
    (
        n,
        vec![pod("db").ns(namespace).labels(json!({"app": "db"})).build()],
    )
}

fn in_zone_1(d: &karpenter::scheduling::Decision, pod: &str) -> bool {
    node_of(d, pod).zones.contains(&"test-zone-1".to_string())
}

fn avoids_db(namespace_selector: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    let mut p = pod("app").req("1", "");
    p.0["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!([{
        "topologyKey": ZONE,
        "labelSelector": {"matchLabels": {"app": "db"}},
        "namespaceSelector": namespace_selector,
    }]);
    p.build()
}

#[test]
fn namespace_selector_selects_namespaces_by_their_labels() {
    let (n, pods) = db_in("blue");
    let mut e = env(vec![default_prov()]).existing(n, pods);
    e.input.namespaces.insert(
        "blue".into(),
        [
            ("team".to_string(), "blue".to_string()),
            (
                "kubernetes.io/metadata.name".to_string(),
                "blue".to_string(),
            ),
        ]
        .into(),
    );
    let d = e.solve(&[avoids_db(json!({"matchLabels": {"team": "blue"}}))]);
    let zones = &node_of(&d, "app").zones;
    assert!(!zones.contains(&"test-zone-1".to_string()), "{zones:?}");
    // A selector that does not select `blue` leaves its db pod out: zone 1 is allowed.
    let d = e.solve(&[avoids_db(json!({"matchLabels": {"team": "red"}}))]);
    assert!(in_zone_1(&d, "app"), "{d:?}");
    // `{}` selects every namespace.
    let d = e.solve(&[avoids_db(json!({}))]);
    assert!(!in_zone_1(&d, "app"), "{d:?}");
}

#[test]
fn namespace_selector_on_the_name_label_needs_no_namespace_objects() {
    let (n, pods) = db_in("blue");
    let e = env(vec![default_prov()]).existing(n, pods);
    let d = e.solve(&[avoids_db(
        json!({"matchLabels": {"kubernetes.io/metadata.name": "blue"}}),
    )]);
    assert!(!in_zone_1(&d, "app"), "{d:?}");
}

#[test]
fn a_cordoned_node_is_not_filled_but_its_pods_count() {
    let mut n = owned_node(
        "cordoned-1",
        json!({ZONE: "test-zone-1", HOST: "cordoned-1"}),
        json!({"cpu": "16", "memory": "64Gi", "pods": "100"}),
        json!([]),
    );
    n.spec.as_mut().unwrap().unschedulable = Some(true);
    let e = env(vec![default_prov()]).existing(n, web().times(1));
    let d = e.solve(&[web()
        .req("1", "")
        .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}))
        .build()]);
    assert!(d.existing_nodes.is_empty(), "{d:?}");
    assert!(!in_zone_1(&d, "web"), "{d:?}");
}

/// Two pods that tolerate the team's taint (placed first, being larger: a team node is
/// planned for them, in zone b when `zone_b`, else in b or d), then four zone-spread web pods
/// with the given `nodeTaintsPolicy`.
fn team_node_then_spread(zone_b: bool, taints_policy: &str) -> Decision {
    team_node_and_spread("2", zone_b, taints_policy)
}

/// The same with the tolerating pods' cpu: at "500m" they are placed after the web pods.
fn team_node_and_spread(ml_cpu: &str, zone_b: bool, taints_policy: &str) -> Decision {
    let mut ml = pod("ml").req(ml_cpu, "");
    ml.0["spec"]["tolerations"] = json!([{"key": "team", "operator": "Exists"}]);
    ml = if zone_b {
        ml.selector(json!({ZONE: "us-east-1b"}))
    } else {
        ml.required(
            json!([[{"key": ZONE, "operator": "In", "values": ["us-east-1b", "us-east-1d"]}]]),
        )
    };
    let mut pods = ml.times(2);
    let mut web = web()
        .req("1", "")
        .spread(ZONE, 1, "DoNotSchedule", json!({"app": "web"}));
    web.0["spec"]["topologySpreadConstraints"][0]["nodeTaintsPolicy"] = json!(taints_policy);
    pods.extend(web.times(4));
    four_zone_env().solve(&pods)
}

#[test]
fn a_node_planned_this_round_is_a_domain_when_the_policy_counts_it() {
    // The team node will exist in zone b; under nodeTaintsPolicy Ignore (the default)
    // kube-scheduler counts it as a domain with no web pod, so a and c take one web pod each.
    for zone_b in [true, false] {
        let d = team_node_then_spread(zone_b, "Ignore");
        assert_eq!(d.scheduled_count(), 4, "ml pods and two web pods: {d:?}");
        let web_zones: Vec<&str> = d
            .nodes
            .iter()
            .filter(|n| n.provisioner == "general")
            .map(|n| n.zones[0].as_str())
            .collect();
        assert_eq!(web_zones.len(), 2, "{d:?}");
        assert_ne!(web_zones[0], web_zones[1], "{d:?}");
        let why = &d.unschedulable[0].reasons["general"];
        assert!(
            why.contains("a new node of this round in us-east-1b"),
            "{why}"
        );
    }
    // Under Honor the tainted node is not counted: two web pods in a, two in c.
    let d = team_node_then_spread(true, "Honor");
    assert!(d.unschedulable.is_empty(), "{d:?}");
    assert_eq!(d.scheduled_count(), 6, "{d:?}");
}

#[test]
fn a_node_planned_after_the_spread_pods_still_counts_as_their_domain() {
    // The web pods are packed first; the team node comes later for the smaller ml pods. The
    // first pass finds that the team node lowers the web spread's minimum to 0, and the second
    // pass knows zone b from the start: one web pod in a, one in c.
    for zone_b in [true, false] {
        let d = team_node_and_spread("500m", zone_b, "Ignore");
        assert_eq!(d.scheduled_count(), 4, "ml pods and two web pods: {d:?}");
        assert_eq!(d.unschedulable.len(), 2, "{d:?}");
        assert!(
            d.unschedulable.iter().all(|u| u.pod.contains("web")),
            "{d:?}"
        );
    }
    let d = team_node_and_spread("500m", true, "Honor");
    assert!(d.unschedulable.is_empty(), "{d:?}");
}
