//! Packing behaviour over Karpenter's fake catalog: binpacking, labels and operators, node
//! affinity, taints, limits, weights, daemonsets, existing nodes, instance selection, GPUs,
//! reasons, and the simulate entry point. Outcomes follow Karpenter's scheduling and
//! instance-selection suites (intent ported, not code).

mod scheduling_support;

use k8s_openapi::api::core::v1::Pod;
use karpenter::cloud::instance_types::{builtin_us_east_1, AwsCatalogOptions};
use karpenter::scheduling::simulate::{simulate, SimulateError, SimulateOptions};
use karpenter::scheduling::SchedulerOptions;
use scheduling_support::*;
use serde_json::json;

const ZONE: &str = "topology.kubernetes.io/zone";
const ARCH: &str = "kubernetes.io/arch";
const CT: &str = "karpenter.sh/capacity-type";
const IT: &str = "node.kubernetes.io/instance-type";

// --- binpacking ---

#[test]
fn schedules_one_pod_on_the_cheapest_type() {
    let d = solve(&[pod("a").req("1", "512Mi").build()]);
    assert_eq!(d.nodes.len(), 1);
    let n = node_of(&d, "a");
    assert_eq!(n.instance_type, "small-instance-type");
    assert_eq!(n.capacity_type, "spot");
    assert!((n.price_per_hour - 0.4).abs() < 1e-9);
    assert!((d.total_price_per_hour - 0.4).abs() < 1e-9);
}

#[test]
fn pod_too_large_for_every_type_is_unschedulable() {
    let d = solve(&[pod("a").req("100", "").build()]);
    assert!(d.nodes.is_empty());
    let r = reason(&d, "a", "default");
    assert!(
        r.starts_with("pod requests 100 cpu; the largest instance type allowed by provisioner default (arm-instance-type) has 15900m allocatable"),
        "{r}"
    );
}

#[test]
fn packs_small_pods_onto_one_node() {
    let pods = pod("a").req("1", "256Mi").times(3);
    let d = solve(&pods);
    assert_eq!(d.nodes.len(), 1, "{d:?}");
    assert_eq!(d.nodes[0].pods.len(), 3);
    assert_eq!(d.nodes[0].instance_type, "default-instance-type");
}

#[test]
fn pod_density_limits_the_node() {
    let pods = pod("a").req("10m", "").times(6);
    let d = solve(&pods);
    assert_eq!(d.nodes.len(), 2);
    assert_eq!(d.scheduled_count(), 6);
}

#[test]
fn memory_drives_the_choice() {
    let d = solve(&[pod("a").req("100m", "3Gi").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn pod_without_requests_schedules() {
    let d = solve(&[pod("a").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "small-instance-type");
}

#[test]
fn init_container_max_counts() {
    let p = pod("a").req("1", "").spec(
        "initContainers",
        json!([{"name": "i", "resources": {"requests": {"cpu": "3"}}}]),
    );
    let d = solve(&[p.build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn pod_overhead_counts() {
    let p = pod("a")
        .req("1800m", "")
        .spec("overhead", json!({"cpu": "200m"}));
    let d = solve(&[p.build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn limits_default_requests() {
    let p = pod("a").limit("cpu", "3");
    let d = solve(&[p.build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn zero_request_of_unknown_resource_is_fine() {
    let d = solve(&[pod("a").res("example.com/thing", "0").build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn unknown_extended_resource_is_unschedulable() {
    let d = solve(&[pod("a").res("example.com/thing", "1").build()]);
    assert!(!scheduled(&d, "a"));
    assert!(reason(&d, "a", "default").contains("example.com/thing"));
}

#[test]
fn ffd_places_large_pods_first() {
    let mut pods = pod("small").req("500m", "").times(4);
    pods.extend(pod("big").req("3", "").times(1));
    let d = solve(&pods);
    assert_eq!(d.scheduled_count(), 5);
    let big = node_of(&d, "big-0");
    assert!(big.pods.len() >= 2, "{d:?}");
}

#[test]
fn many_pods_all_schedule() {
    let pods = pod("a").req("1", "1Gi").times(40);
    let d = solve(&pods);
    assert_eq!(d.scheduled_count(), 40);
    assert!(d.unschedulable.is_empty());
}

// --- GPUs and extended resources ---

#[test]
fn vendor_a_gpu_selects_gpu_type() {
    let d = solve(&[pod("a").res("fake.com/vendor-a", "1").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "gpu-vendor-instance-type");
}

#[test]
fn vendor_b_gpu_selects_other_type() {
    let d = solve(&[pod("a").res("fake.com/vendor-b", "2").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "gpu-vendor-b-instance-type");
}

#[test]
fn too_many_gpus_unschedulable() {
    let d = solve(&[pod("a").res("fake.com/vendor-a", "3").build()]);
    let r = reason(&d, "a", "default");
    assert!(r.contains("fake.com/vendor-a"), "{r}");
}

#[test]
fn gpu_pods_share_a_node_up_to_capacity() {
    let pods = pod("a").res("fake.com/vendor-a", "1").times(3);
    let d = solve(&pods);
    assert_eq!(d.nodes.len(), 2);
}

#[test]
fn single_pod_type_holds_one_pod() {
    let pods = pod("a")
        .selector(json!({IT: "single-pod-instance-type"}))
        .times(2);
    let d = solve(&pods);
    assert_eq!(d.nodes.len(), 2);
}

#[test]
fn aws_gpu_pod_lands_on_gpu_instance() {
    let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
    let e = env(vec![prov(
        "gpu",
        json!({"requirements": [{"key": CT, "operator": "In", "values": ["on-demand"]}]}),
    )])
    .types(types);
    let d = e.solve(&[pod("a").res("nvidia.com/gpu", "1").build()]);
    let n = node_of(&d, "a");
    assert!(
        n.instance_type.starts_with('g') || n.instance_type.starts_with('p'),
        "{}",
        n.instance_type
    );
}

/// The guide-like catalog, on-demand only, optionally narrowed to some instance families.
fn gpu_env(families: Option<&[&str]>) -> Env {
    let mut reqs = vec![json!({"key": CT, "operator": "In", "values": ["on-demand"]})];
    if let Some(f) = families {
        reqs.push(
            json!({"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": f}),
        );
    }
    let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
    env(vec![prov("default", json!({ "requirements": reqs }))]).types(types)
}

/// One GPU pod of 4 CPU (packed first) and `n` pods of 3 CPU with a zone spread that never
/// binds (it keeps the improvement pass off them, so this is the first-fit packing's choice).
fn gpu_and_spread_pods(n: usize) -> Vec<Pod> {
    let mut pods = vec![pod("gpu")
        .req("4", "8Gi")
        .res("nvidia.com/gpu", "1")
        .build()];
    for i in 0..n {
        pods.push(
            pod(&format!("web-{i}"))
                .req("3", "4Gi")
                .labels(json!({"app": "web"}))
                .spread(ZONE, 100, "DoNotSchedule", json!({"app": "web"}))
                .build(),
        );
    }
    pods
}

#[test]
fn a_pod_without_gpus_does_not_make_a_gpu_node_dearer_than_a_node_of_its_own() {
    let e = gpu_env(None);
    let alone = e.solve(&gpu_and_spread_pods(0));
    let gpu_alone = node_of(&alone, "gpu").clone();
    let d = e.solve(&gpu_and_spread_pods(3));
    assert!(d.unschedulable.is_empty(), "{:?}", d.unschedulable);
    let gpu = node_of(&d, "gpu");
    assert_eq!(
        gpu.instance_type, gpu_alone.instance_type,
        "the GPU node grew for pods that need no GPU: {gpu:?}"
    );
    // One web pod fits the GPU node's spare room; a second would need the next size up,
    // which costs more than a node of its own.
    assert_eq!(gpu.pods.len(), 2, "{gpu:?}");
}

#[test]
fn a_pod_without_gpus_fills_spare_room_on_a_gpu_node_for_free() {
    let e = gpu_env(None);
    let alone = e.solve(&gpu_and_spread_pods(0));
    let mut pods = gpu_and_spread_pods(0);
    pods.push(pod("tiny").req("100m", "128Mi").build());
    let d = e.solve(&pods);
    assert_eq!(d.nodes.len(), 1, "{:?}", d.nodes);
    assert!(node_of(&d, "gpu")
        .pods
        .contains(&"default/tiny".to_string()));
    assert!((d.total_price_per_hour - alone.total_price_per_hour).abs() < 1e-9);
}

#[test]
fn a_pod_without_gpus_joins_a_gpu_node_when_that_costs_less_than_a_node_of_its_own() {
    // Only GPU families: a node of its own for a web pod is a whole GPU node.
    let e = gpu_env(Some(&["g4dn"]));
    let d = e.solve(&gpu_and_spread_pods(1));
    assert!(d.unschedulable.is_empty(), "{:?}", d.unschedulable);
    assert_eq!(d.nodes.len(), 1, "{:?}", d.nodes);
    assert!(node_of(&d, "gpu")
        .pods
        .contains(&"default/web-0".to_string()));
}

// --- labels and operators ---

#[test]
fn zone_selector_pins_the_zone() {
    let d = solve(&[pod("a").selector(json!({ZONE: "test-zone-3"})).build()]);
    let n = node_of(&d, "a");
    assert_eq!(n.zones, ["test-zone-3"]);
    assert_eq!(
        n.capacity_type, "on-demand",
        "spot is not offered in zone 3"
    );
}

#[test]
fn arch_selector_picks_arm() {
    let d = solve(&[pod("a").selector(json!({ARCH: "arm64"})).build()]);
    assert_eq!(node_of(&d, "a").instance_type, "arm-instance-type");
}

#[test]
fn legacy_arch_label_is_normalised() {
    let d = solve(&[pod("a")
        .selector(json!({"beta.kubernetes.io/arch": "arm64"}))
        .build()]);
    assert_eq!(node_of(&d, "a").instance_type, "arm-instance-type");
}

#[test]
fn legacy_zone_label_is_normalised() {
    let d = solve(&[pod("a")
        .selector(json!({"failure-domain.beta.kubernetes.io/zone": "test-zone-2"}))
        .build()]);
    assert_eq!(node_of(&d, "a").zones, ["test-zone-2"]);
}

#[test]
fn undefined_custom_label_is_unschedulable() {
    let d = solve(&[pod("a").selector(json!({"tier": "x"})).build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "label 'tier' has no known values"
    );
}

#[test]
fn custom_label_typo_is_hinted() {
    let e = env(vec![prov("default", json!({"labels": {"teir": "web"}}))]);
    let d = e.solve(&[pod("a").selector(json!({"tier": "web"})).build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "label 'tier' has no known values (typo of 'teir'?)"
    );
}

#[test]
fn provisioner_label_matches_selector() {
    let e = env(vec![prov("default", json!({"labels": {"team": "a"}}))]);
    let d = e.solve(&[pod("a").selector(json!({"team": "a"})).build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn provisioner_label_mismatch_is_explained() {
    let e = env(vec![prov("default", json!({"labels": {"team": "a"}}))]);
    let d = e.solve(&[pod("a").selector(json!({"team": "b"})).build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "pod requires team b; provisioner default allows a"
    );
}

#[test]
fn provisioner_zone_requirement_conflict_is_explained() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1", "test-zone-2"]}]}),
    )]);
    let d = e.solve(&[pod("a").selector(json!({ZONE: "test-zone-3"})).build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "pod requires zone test-zone-3; provisioner default allows test-zone-1, test-zone-2"
    );
}

#[test]
fn not_in_zone() {
    let d = solve(&[pod("a")
        .required(
            json!([[{"key": ZONE, "operator": "NotIn", "values": ["test-zone-1", "test-zone-2"]}]]),
        )
        .build()]);
    assert_eq!(node_of(&d, "a").zones, ["test-zone-3"]);
}

#[test]
fn exists_on_undefined_custom_label_fails() {
    let d = solve(&[pod("a")
        .required(json!([[{"key": "foo", "operator": "Exists"}]]))
        .build()]);
    assert!(!scheduled(&d, "a"));
}

#[test]
fn does_not_exist_on_undefined_custom_label_is_fine() {
    let d = solve(&[pod("a")
        .required(json!([[{"key": "foo", "operator": "DoesNotExist"}]]))
        .build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn not_in_on_undefined_custom_label_is_fine() {
    let d = solve(&[pod("a")
        .required(json!([[{"key": "foo", "operator": "NotIn", "values": ["x"]}]]))
        .build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn gt_on_integer_label() {
    let d = solve(&[pod("a")
        .required(json!([[{"key": "integer", "operator": "Gt", "values": ["4"]}]]))
        .build()]);
    assert_eq!(node_of(&d, "a").instance_type, "arm-instance-type");
}

#[test]
fn lt_on_integer_label() {
    let d = solve(&[pod("a")
        .required(json!([[{"key": "integer", "operator": "Lt", "values": ["4"]}]]))
        .build()]);
    assert_eq!(node_of(&d, "a").instance_type, "small-instance-type");
}

#[test]
fn gt_and_lt_leave_nothing() {
    let d = solve(&[pod("a")
        .required(
            json!([[{"key": "integer", "operator": "Gt", "values": ["4"]},
                          {"key": "integer", "operator": "Lt", "values": ["16"]}]]),
        )
        .build()]);
    assert!(!scheduled(&d, "a"));
}

#[test]
fn unknown_instance_type_is_unschedulable() {
    let d = solve(&[pod("a").selector(json!({IT: "nope"})).build()]);
    let r = reason(&d, "a", "default");
    assert!(r.contains("instance type"), "{r}");
}

#[test]
fn instance_type_label_on_type_schedules() {
    let d = solve(&[pod("a").selector(json!({"size": "large"})).build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn windows_is_offered() {
    let d = solve(&[pod("a")
        .selector(json!({"kubernetes.io/os": "windows"}))
        .build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn capacity_type_on_demand_provisioner() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": CT, "operator": "In", "values": ["on-demand"]}]}),
    )]);
    let d = e.solve(&[pod("a").build()]);
    assert_eq!(node_of(&d, "a").capacity_type, "on-demand");
}

#[test]
fn pod_requires_on_demand() {
    let d = solve(&[pod("a").selector(json!({CT: "on-demand"})).build()]);
    assert_eq!(node_of(&d, "a").capacity_type, "on-demand");
}

#[test]
fn pod_requires_spot() {
    let d = solve(&[pod("a").selector(json!({CT: "spot"})).build()]);
    let n = node_of(&d, "a");
    assert_eq!(n.capacity_type, "spot");
    assert_eq!(n.zones, ["test-zone-1", "test-zone-2"]);
}

#[test]
fn pod_requirements_intersect_with_provisioner() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": ARCH, "operator": "In", "values": ["amd64"]}]}),
    )]);
    let d = e.solve(&[pod("a").selector(json!({ARCH: "arm64"})).build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "pod requires architecture arm64; provisioner default allows amd64"
    );
}

// --- node affinity and relaxation ---

#[test]
fn required_terms_are_ored() {
    let d = solve(&[pod("a")
        .required(json!([
            [{"key": ZONE, "operator": "In", "values": ["nowhere"]}],
            [{"key": ZONE, "operator": "In", "values": ["test-zone-2"]}]
        ]))
        .build()]);
    assert_eq!(node_of(&d, "a").zones, ["test-zone-2"]);
    assert_eq!(d.relaxed.len(), 1);
}

#[test]
fn single_impossible_required_term_fails() {
    let d = solve(&[pod("a")
        .required(json!([[{"key": ZONE, "operator": "In", "values": ["nowhere"]}]]))
        .build()]);
    assert!(!scheduled(&d, "a"));
}

#[test]
fn preferred_node_affinity_is_honoured() {
    let d = solve(&[pod("a")
        .preferred(&[(
            10,
            json!([{"key": ZONE, "operator": "In", "values": ["test-zone-3"]}]),
        )])
        .build()]);
    assert_eq!(node_of(&d, "a").zones, ["test-zone-3"]);
    assert!(d.relaxed.is_empty());
}

#[test]
fn unsatisfiable_preference_is_relaxed() {
    let d = solve(&[pod("a")
        .preferred(&[(
            10,
            json!([{"key": ZONE, "operator": "In", "values": ["nowhere"]}]),
        )])
        .build()]);
    assert!(scheduled(&d, "a"));
    assert_eq!(d.relaxed.len(), 1);
    assert!(d.relaxed[0].relaxed[0].contains("preferred node affinity"));
}

#[test]
fn heaviest_preference_first() {
    let d = solve(&[pod("a")
        .preferred(&[
            (
                1,
                json!([{"key": ZONE, "operator": "In", "values": ["test-zone-1"]}]),
            ),
            (
                100,
                json!([{"key": ZONE, "operator": "In", "values": ["test-zone-2"]}]),
            ),
        ])
        .build()]);
    assert_eq!(node_of(&d, "a").zones, ["test-zone-2"]);
}

#[test]
fn lighter_preference_after_heavier_relaxed() {
    let d = solve(&[pod("a")
        .preferred(&[
            (
                1,
                json!([{"key": ZONE, "operator": "In", "values": ["test-zone-1"]}]),
            ),
            (
                100,
                json!([{"key": ZONE, "operator": "In", "values": ["nowhere"]}]),
            ),
        ])
        .build()]);
    assert_eq!(node_of(&d, "a").zones, ["test-zone-1"]);
}

#[test]
fn required_and_preferred_combine() {
    let d = solve(&[pod("a")
        .required(
            json!([[{"key": ZONE, "operator": "In", "values": ["test-zone-1", "test-zone-2"]}]]),
        )
        .preferred(&[(
            1,
            json!([{"key": ZONE, "operator": "In", "values": ["test-zone-3"]}]),
        )])
        .build()]);
    let n = node_of(&d, "a");
    assert!(n.zones.iter().all(|z| z != "test-zone-3"));
}

// --- taints and tolerations ---

fn tainted(effect: &str) -> karpenter::api::Provisioner {
    prov(
        "default",
        json!({"taints": [{"key": "foo", "value": "bar", "effect": effect}]}),
    )
}

#[test]
fn untolerated_taint_is_explained() {
    let d = env(vec![tainted("NoSchedule")]).solve(&[pod("a").build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "provisioner default has taint foo=bar:NoSchedule that the pod does not tolerate"
    );
}

#[test]
fn equal_toleration_schedules() {
    let p = pod("a").tolerate(
        json!({"key": "foo", "operator": "Equal", "value": "bar", "effect": "NoSchedule"}),
    );
    let d = env(vec![tainted("NoSchedule")]).solve(&[p.build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn exists_toleration_schedules() {
    let p = pod("a").tolerate(json!({"key": "foo", "operator": "Exists"}));
    let d = env(vec![tainted("NoSchedule")]).solve(&[p.build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn tolerate_everything() {
    let p = pod("a").tolerate(json!({"operator": "Exists"}));
    let d = env(vec![tainted("NoExecute")]).solve(&[p.build()]);
    assert!(scheduled(&d, "a"));
}

#[test]
fn wrong_value_does_not_tolerate() {
    let p = pod("a").tolerate(json!({"key": "foo", "operator": "Equal", "value": "baz"}));
    let d = env(vec![tainted("NoSchedule")]).solve(&[p.build()]);
    assert!(!scheduled(&d, "a"));
}

#[test]
fn wrong_effect_does_not_tolerate() {
    let p = pod("a").tolerate(json!({"key": "foo", "operator": "Exists", "effect": "NoExecute"}));
    let d = env(vec![tainted("NoSchedule")]).solve(&[p.build()]);
    assert!(!scheduled(&d, "a"));
}

#[test]
fn startup_taints_are_ignored() {
    let e = env(vec![prov(
        "default",
        json!({"startupTaints": [{"key": "init", "effect": "NoSchedule"}]}),
    )]);
    assert!(scheduled(&e.solve(&[pod("a").build()]), "a"));
}

#[test]
fn prefer_no_schedule_is_relaxed_last() {
    let d = env(vec![tainted("PreferNoSchedule")]).solve(&[pod("a").build()]);
    assert!(scheduled(&d, "a"));
    assert!(d.relaxed[0].relaxed[0].contains("PreferNoSchedule"));
}

// --- limits ---

#[test]
fn cpu_limit_blocks_large_node() {
    let e = env(vec![prov(
        "default",
        json!({"limits": {"resources": {"cpu": "2"}}}),
    )]);
    let d = e.solve(&[pod("a").req("3", "").build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "cpu limit 2 of provisioner default reached: 0 used, 2 left; a node for the pod adds at least 3"
    );
}

#[test]
fn limit_counts_in_flight_nodes() {
    let e = env(vec![prov(
        "default",
        json!({"limits": {"resources": {"cpu": "5"}}}),
    )]);
    let d = e.solve(&pod("a").req("3", "").times(2));
    assert_eq!(d.scheduled_count(), 1);
    assert_eq!(d.unschedulable.len(), 1);
}

#[test]
fn memory_limit() {
    let e = env(vec![prov(
        "default",
        json!({"limits": {"resources": {"memory": "1Gi"}}}),
    )]);
    let d = e.solve(&[pod("a").build()]);
    assert!(reason(&d, "a", "default").starts_with("memory limit 1Gi"));
}

#[test]
fn limit_counts_existing_nodes() {
    let e = env(vec![prov(
        "default",
        json!({"limits": {"resources": {"cpu": "6"}}}),
    )])
    .existing(
        node(
            "n1",
            json!({"karpenter.sh/provisioner-name": "default"}),
            json!({"cpu": "4", "memory": "4Gi", "pods": "5"}),
            json!([]),
        ),
        vec![pod("x").req("4", "").spec("nodeName", json!("n1")).build()],
    );
    let d = e.solve(&[pod("a").req("3", "").build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "cpu limit 6 of provisioner default reached: 4 used, 2 left; a node for the pod adds at least 3"
    );
}

#[test]
fn limit_filters_options_but_allows_small() {
    let e = env(vec![prov(
        "default",
        json!({"limits": {"resources": {"cpu": "2"}}}),
    )]);
    let d = e.solve(&[pod("a").req("1", "").build()]);
    let n = node_of(&d, "a");
    assert_eq!(n.instance_type_options, ["small-instance-type"]);
}

// --- weights and multiple provisioners ---

#[test]
fn heavier_provisioner_wins() {
    let e = env(vec![
        prov("a", json!({"weight": 10})),
        prov("b", json!({"weight": 50})),
    ]);
    assert_eq!(node_of(&e.solve(&[pod("p").build()]), "p").provisioner, "b");
}

#[test]
fn equal_weight_sorts_by_name() {
    let e = env(vec![prov("zeta", json!({})), prov("alpha", json!({}))]);
    assert_eq!(
        node_of(&e.solve(&[pod("p").build()]), "p").provisioner,
        "alpha"
    );
}

#[test]
fn incompatible_heavy_provisioner_falls_through() {
    let e = env(vec![
        prov("light", json!({})),
        prov(
            "heavy",
            json!({"weight": 100, "requirements": [{"key": ARCH, "operator": "In", "values": ["arm64"]}]}),
        ),
    ]);
    let d = e.solve(&[pod("p").selector(json!({ARCH: "amd64"})).build()]);
    assert_eq!(node_of(&d, "p").provisioner, "light");
}

#[test]
fn reasons_for_every_provisioner() {
    let e = env(vec![
        prov(
            "gpu",
            json!({"taints": [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]}),
        ),
        prov(
            "default",
            json!({"requirements": [{"key": ZONE, "operator": "In", "values": ["test-zone-1"]}]}),
        ),
    ]);
    let d = e.solve(&[pod("p").selector(json!({ZONE: "test-zone-3"})).build()]);
    assert_eq!(
        reason(&d, "p", "gpu"),
        "provisioner gpu has taint nvidia.com/gpu=true:NoSchedule that the pod does not tolerate"
    );
    assert_eq!(
        reason(&d, "p", "default"),
        "pod requires zone test-zone-3; provisioner default allows test-zone-1"
    );
}

#[test]
fn provisioner_name_selector() {
    let e = env(vec![prov("a", json!({"weight": 10})), prov("b", json!({}))]);
    let d = e.solve(&[pod("p")
        .selector(json!({"karpenter.sh/provisioner-name": "b"}))
        .build()]);
    assert_eq!(node_of(&d, "p").provisioner, "b");
}

#[test]
fn no_provisioner_means_unschedulable() {
    let d = env(vec![]).solve(&[pod("p").build()]);
    assert_eq!(d.unschedulable.len(), 1);
}

// --- daemonsets ---

#[test]
fn daemonset_overhead_reduces_capacity() {
    let e = env(vec![default_prov()]).ds(daemonset(
        "ds",
        json!({"containers": [{"name": "d", "resources": {"requests": {"cpu": "1"}}}]}),
    ));
    let d = e.solve(&[pod("a").req("3", "").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "arm-instance-type");
}

#[test]
fn daemonset_not_tolerating_taint_is_ignored() {
    let e = env(vec![tainted("NoSchedule")]).ds(daemonset(
        "ds",
        json!({"containers": [{"name": "d", "resources": {"requests": {"cpu": "1"}}}]}),
    ));
    let p = pod("a")
        .req("3", "")
        .tolerate(json!({"operator": "Exists"}));
    let d = e.solve(&[p.build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn daemonset_with_arm_selector_only_counts_on_arm() {
    let e = env(vec![default_prov()]).ds(daemonset(
        "ds",
        json!({"nodeSelector": {ARCH: "arm64"}, "containers": [{"name": "d", "resources": {"requests": {"cpu": "1"}}}]}),
    ));
    let d = e.solve(&[pod("a").req("3", "").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "default-instance-type");
}

#[test]
fn daemonset_overhead_in_reason() {
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": IT, "operator": "In", "values": ["default-instance-type"]}]}),
    )])
    .ds(daemonset(
        "ds",
        json!({"containers": [{"name": "d", "resources": {"requests": {"cpu": "1"}}}]}),
    ));
    let d = e.solve(&[pod("a").req("3500m", "").build()]);
    let r = reason(&d, "a", "default");
    assert!(r.contains("after daemonset overhead"), "{r}");
}

// --- existing nodes ---

fn existing_env() -> Env {
    env(vec![default_prov()]).existing(
        owned_node(
            "n1",
            json!({ZONE: "test-zone-1", "kubernetes.io/hostname": "n1"}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            json!([]),
        ),
        vec![pod("old")
            .req("1", "")
            .spec("nodeName", json!("n1"))
            .build()],
    )
}

#[test]
fn pod_lands_on_existing_node() {
    let d = existing_env().solve(&[pod("a").req("1", "").build()]);
    assert_eq!(d.existing_node_of("default/a"), Some("n1"));
    assert!(d.nodes.is_empty());
    assert_eq!(d.total_price_per_hour, 0.0);
}

#[test]
fn full_existing_node_needs_new_node() {
    let d = existing_env().solve(&[pod("a").req("3500m", "").build()]);
    assert!(d.existing_node_of("default/a").is_none());
    assert!(scheduled(&d, "a"));
}

#[test]
fn existing_node_taint_blocks() {
    let e = env(vec![default_prov()]).existing(
        owned_node(
            "n1",
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        ),
        vec![],
    );
    let d = e.solve(&[pod("a").build()]);
    assert!(d.existing_node_of("default/a").is_none());
    let tolerant = pod("b").tolerate(json!({"key": "k", "operator": "Exists"}));
    let d = e.solve(&[tolerant.build()]);
    assert_eq!(d.existing_node_of("default/b"), Some("n1"));
}

#[test]
fn existing_node_label_mismatch() {
    let d = existing_env().solve(&[pod("a").selector(json!({ZONE: "test-zone-2"})).build()]);
    assert!(d.existing_node_of("default/a").is_none());
    assert_eq!(node_of(&d, "a").zones, ["test-zone-2"]);
}

#[test]
fn existing_node_custom_label_required() {
    let e = env(vec![default_prov()]).existing(
        owned_node(
            "n1",
            json!({"team": "a"}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            json!([]),
        ),
        vec![],
    );
    let d = e.solve(&[pod("a").selector(json!({"team": "a"})).build()]);
    assert_eq!(d.existing_node_of("default/a"), Some("n1"));
}

#[test]
fn existing_fills_before_new() {
    let pods = pod("a").req("1", "").times(5);
    let d = existing_env().solve(&pods);
    assert_eq!(d.existing_nodes[0].pods.len(), 3);
    assert_eq!(d.scheduled_count(), 5);
}

// --- host ports ---

#[test]
fn same_host_port_needs_two_nodes() {
    let d = solve(&pod("a").host_port(8080).times(2));
    assert_eq!(d.nodes.len(), 2);
}

#[test]
fn different_host_ports_share() {
    let d = solve(&[
        pod("a").host_port(80).build(),
        pod("b").host_port(81).build(),
    ]);
    assert_eq!(d.nodes.len(), 1);
}

#[test]
fn existing_host_port_conflict() {
    let e = env(vec![default_prov()]).existing(
        owned_node(
            "n1",
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            json!([]),
        ),
        vec![pod("x").host_port(80).spec("nodeName", json!("n1")).build()],
    );
    let d = e.solve(&[pod("a").host_port(80).build()]);
    assert!(d.existing_node_of("default/a").is_none());
    let d = e.solve(&[pod("b").host_port(81).build()]);
    assert_eq!(d.existing_node_of("default/b"), Some("n1"));
}

// --- instance selection ---

#[test]
fn options_are_cheapest_first() {
    let d = solve(&[pod("a").build()]);
    let n = node_of(&d, "a");
    assert_eq!(n.instance_type_options[0], n.instance_type);
    assert!(n.instance_type_options.len() > 3);
    assert!(n
        .instance_type_options
        .contains(&"arm-instance-type".to_string()));
}

#[test]
fn options_exclude_too_small() {
    let d = solve(&[pod("a").req("3", "").build()]);
    let n = node_of(&d, "a");
    assert!(!n
        .instance_type_options
        .contains(&"small-instance-type".to_string()));
}

#[test]
fn options_respect_arch() {
    let d = solve(&[pod("a").selector(json!({ARCH: "amd64"})).build()]);
    let n = node_of(&d, "a");
    assert!(!n
        .instance_type_options
        .contains(&"arm-instance-type".to_string()));
}

#[test]
fn at_most_sixty_options() {
    let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": CT, "operator": "In", "values": ["on-demand"]}]}),
    )])
    .types(types);
    let d = e.solve(&[pod("a").req("1", "").build()]);
    let n = node_of(&d, "a");
    assert_eq!(n.instance_type_options.len(), 60);
}

#[test]
fn unavailable_offerings_are_skipped() {
    let types = karpenter::cloud::instance_types::parse_instance_types(
        "- name: cheap\n  capacity: {cpu: '4', memory: 4Gi, pods: '10'}\n  overhead: {}\n  offerings:\n  - {zone: z1, capacityType: on-demand, price: 0.1, available: false}\n- name: pricey\n  capacity: {cpu: '4', memory: 4Gi, pods: '10'}\n  overhead: {}\n  offerings:\n  - {zone: z1, capacityType: on-demand, price: 0.5}\n",
    )
    .unwrap();
    let d = env(vec![default_prov()])
        .types(types)
        .solve(&[pod("a").build()]);
    assert_eq!(node_of(&d, "a").instance_type, "pricey");
}

#[test]
fn spot_price_unknown_is_flagged() {
    let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": IT, "operator": "In", "values": ["m5.large"]}]}),
    )])
    .types(types);
    let d = e.solve(&[pod("a").req("1", "").build()]);
    let n = node_of(&d, "a");
    assert_eq!(n.capacity_type, "spot");
    assert!(n.price_is_upper_bound);
    assert!(!d.notes.is_empty());
}

#[test]
fn spot_discount_assumption_prices_spot() {
    let types = builtin_us_east_1(&AwsCatalogOptions {
        assume_spot_discount: Some(0.6),
    })
    .unwrap();
    let e = env(vec![prov(
        "default",
        json!({"requirements": [{"key": IT, "operator": "In", "values": ["m5.large"]}]}),
    )])
    .types(types);
    let d = e.solve(&[pod("a").req("1", "").build()]);
    let n = node_of(&d, "a");
    assert!(!n.price_is_upper_bound);
    assert!((n.price_per_hour - 0.096 * 0.4).abs() < 1e-9);
}

#[test]
fn huge_memory_reason_on_aws() {
    let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
    let mut p = prov("default", json!({}));
    karpenter::api::default_provisioner(&mut p.spec);
    let e = env(vec![p]).types(types);
    let d = e.solve(&[pod("a").req("1", "4Ti").build()]);
    let r = reason(&d, "a", "default");
    assert!(
        r.starts_with(
            "pod requests 4Ti memory; the largest instance type allowed by provisioner default ("
        ),
        "{r}"
    );
    assert!(r.ends_with("allocatable"), "{r}");
}

// --- decision document ---

#[test]
fn decision_json_shape() {
    let d = existing_env().solve(&[
        pod("a").req("1", "").build(),
        pod("b").req("3", "").build(),
        pod("c").req("100", "").build(),
    ]);
    let v = serde_json::to_value(&d).unwrap();
    for k in [
        "nodes",
        "existingNodes",
        "unschedulable",
        "totalPricePerHour",
    ] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    let n = &v["nodes"][0];
    for k in [
        "provisioner",
        "instanceType",
        "instanceTypeOptions",
        "capacityType",
        "zones",
        "pricePerHour",
        "pods",
    ] {
        assert!(n.get(k).is_some(), "{k} missing: {n}");
    }
    assert_eq!(v["unschedulable"][0]["pod"], "default/c");
    assert!(v["unschedulable"][0]["reasons"]["default"].is_string());
    let back: karpenter::scheduling::Decision = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn decision_is_deterministic() {
    let pods: Vec<_> = (0..30)
        .map(|i| {
            pod(&format!("p{i}"))
                .req(&format!("{}m", 100 + 97 * (i % 7)), "")
                .build()
        })
        .collect();
    assert_eq!(solve(&pods), solve(&pods));
}

// --- simulate and the improvement pass ---

fn inflate_docs(replicas: i32) -> Vec<serde_json::Value> {
    vec![
        json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner", "metadata": {"name": "default"},
               "spec": {"requirements": [
                   {"key": IT, "operator": "In", "values": ["m5.large", "m5.2xlarge"]},
                   {"key": CT, "operator": "In", "values": ["on-demand"]}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "inflate", "namespace": "default"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "inflate"}},
                        "template": {"metadata": {"labels": {"app": "inflate"}},
                                     "spec": {"containers": [{"name": "inflate", "image": "pause",
                                              "resources": {"requests": {"cpu": "1"}}}]}}}}),
    ]
}

fn aws() -> Vec<karpenter::scheduling::InstanceType> {
    builtin_us_east_1(&AwsCatalogOptions::default()).unwrap()
}

#[test]
fn inflate_ten_costs_0_672() {
    let d = simulate(&inflate_docs(10), aws(), &SimulateOptions::default()).unwrap();
    assert_eq!(d.scheduled_count(), 10);
    assert!((d.total_price_per_hour - 0.672).abs() < 1e-9, "{d:#?}");
    let mut types: Vec<&str> = d.nodes.iter().map(|n| n.instance_type.as_str()).collect();
    types.sort();
    assert_eq!(types, ["m5.2xlarge", "m5.large", "m5.large", "m5.large"]);
    assert!(d.node_of("default/inflate-0").is_some());
}

#[test]
fn inflate_without_improvement_is_plain_ffd() {
    let opts = SimulateOptions {
        scheduler: SchedulerOptions {
            improve: false,
            ..Default::default()
        },
    };
    let d = simulate(&inflate_docs(10), aws(), &opts).unwrap();
    assert!((d.total_price_per_hour - 0.768).abs() < 1e-9, "{d:#?}");
}

#[test]
fn simulate_defaults_provisioners() {
    let docs = vec![
        json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner", "metadata": {"name": "default"}, "spec": {}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
               "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
    ];
    let d = simulate(&docs, aws(), &SimulateOptions::default()).unwrap();
    let n = node_of(&d, "p");
    assert_eq!(n.capacity_type, "on-demand");
    assert!(
        ["c", "m", "r"]
            .iter()
            .any(|c| n.instance_type.starts_with(c)),
        "{}",
        n.instance_type
    );
}

#[test]
fn simulate_binds_pods_to_nodes() {
    let docs = vec![
        json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner", "metadata": {"name": "default"}, "spec": {}}),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {ZONE: "us-east-1a"}},
               "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "10"}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bound", "namespace": "default"},
               "spec": {"nodeName": "n1", "containers": [{"name": "c", "resources": {"requests": {"cpu": "1500m"}}}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
               "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}),
    ];
    let d = simulate(&docs, aws(), &SimulateOptions::default()).unwrap();
    assert!(
        d.existing_node_of("default/p").is_none(),
        "n1 has only 500m left"
    );
    assert!(d.notes.iter().any(|n| n.contains("Service")));
}

#[test]
fn simulate_unknown_node_is_an_error() {
    let docs = vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"nodeName": "ghost", "containers": [{"name": "c"}]}}),
    ];
    let err = simulate(&docs, aws(), &SimulateOptions::default()).unwrap_err();
    assert!(matches!(err, SimulateError::UnknownNode { .. }), "{err}");
}

#[test]
fn simulate_rejects_invalid_provisioner() {
    let docs = vec![
        json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
        "metadata": {"name": "bad"}, "spec": {"bogus": 1}}),
    ];
    let err = simulate(&docs, aws(), &SimulateOptions::default()).unwrap_err();
    assert!(matches!(err, SimulateError::Decode { .. }), "{err}");
}

#[test]
fn improvement_never_raises_the_price() {
    for n in [1, 3, 7, 9, 13] {
        let with = simulate(&inflate_docs(n), aws(), &SimulateOptions::default()).unwrap();
        let without = simulate(
            &inflate_docs(n),
            aws(),
            &SimulateOptions {
                scheduler: SchedulerOptions {
                    improve: false,
                    ..Default::default()
                },
            },
        )
        .unwrap();
        assert_eq!(with.scheduled_count(), n as usize);
        assert!(with.total_price_per_hour <= without.total_price_per_hour + 1e-9);
    }
}

// --- invariants over random workloads ---

/// splitmix64, for reproducible random workloads.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn every_new_node_fits_its_pods() {
    let types = fake_types();
    for seed in 0..20u64 {
        let mut s = seed;
        let n = 5 + (splitmix(&mut s) % 60) as usize;
        let pods: Vec<_> = (0..n)
            .map(|i| {
                let cpu =
                    ["100m", "250m", "500m", "1", "1500m", "3"][(splitmix(&mut s) % 6) as usize];
                let mem = ["64Mi", "256Mi", "1Gi", "2Gi", "3Gi"][(splitmix(&mut s) % 5) as usize];
                let mut p = pod(&format!("p{i}")).req(cpu, mem);
                if splitmix(&mut s).is_multiple_of(5) {
                    p = p.selector(json!({ZONE: "test-zone-2"}));
                }
                if splitmix(&mut s).is_multiple_of(7) {
                    p = p.res("fake.com/vendor-a", "1");
                }
                p.build()
            })
            .collect();
        let d = solve(&pods);
        assert_eq!(
            d.scheduled_count() + d.unschedulable.len(),
            n,
            "seed {seed}"
        );
        for node in &d.nodes {
            let t = types.iter().find(|t| t.name == node.instance_type).unwrap();
            let alloc = t.allocatable(None);
            let mut used = std::collections::BTreeMap::<String, i64>::new();
            for key in &node.pods {
                let name = key.trim_start_matches("default/");
                let p = pods
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(name))
                    .unwrap();
                for (k, v) in karpenter::scheduling::resources::pod_requests(p).unwrap() {
                    *used.entry(k).or_insert(0) += v;
                }
            }
            for (k, v) in used {
                assert!(
                    v <= alloc.get(&k).copied().unwrap_or(0),
                    "seed {seed}: {k} {v} on {node:?}"
                );
            }
        }
        let improved = d.total_price_per_hour;
        let mut e = env(vec![default_prov()]);
        e.input.options.improve = false;
        assert!(
            improved <= e.solve(&pods).total_price_per_hour + 1e-9,
            "seed {seed}"
        );
    }
}

// --- YAML scenarios through simulate ---

fn load_docs(file: &str) -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn inflate_yaml_scenario() {
    let d = simulate(
        &load_docs("inflate.yaml"),
        aws(),
        &SimulateOptions::default(),
    )
    .unwrap();
    assert!((d.total_price_per_hour - 0.672).abs() < 1e-9);
    let table = d.render_table();
    assert!(table.starts_with("PROVISIONER"), "{table}");
    assert!(
        table.contains("total: 4 new node(s), 0.6720 USD/hour"),
        "{table}"
    );
}

#[test]
fn mixed_cluster_yaml_scenario() {
    let d = simulate(
        &load_docs("mixed-cluster.yaml"),
        aws(),
        &SimulateOptions::default(),
    )
    .unwrap();
    assert_eq!(d.existing_node_of("default/small"), Some("ip-10-0-0-1"));
    let gpu = d.node_of("default/trainer").unwrap();
    assert_eq!(gpu.provisioner, "gpu");
    assert!(
        gpu.instance_type.starts_with("g4dn"),
        "{}",
        gpu.instance_type
    );
    let lost = d
        .unschedulable
        .iter()
        .find(|u| u.pod == "default/lost")
        .unwrap();
    assert_eq!(
        lost.reasons["default"],
        "pod requires zone us-east-1c; provisioner default allows us-east-1a, us-east-1b"
    );
    assert_eq!(
        lost.reasons["gpu"],
        "provisioner gpu has taint nvidia.com/gpu=true:NoSchedule that the pod does not tolerate"
    );
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["existingNodes"][0]["node"], "ip-10-0-0-1");
}

#[test]
fn host_ports_on_existing_node_are_tracked_within_a_round() {
    let e = env(vec![default_prov()]).existing(
        owned_node(
            "n1",
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
            json!([]),
        ),
        vec![],
    );
    let d = e.solve(&pod("a").host_port(80).times(2));
    assert_eq!(d.existing_nodes[0].pods.len(), 1);
    assert_eq!(d.nodes.len(), 1);
}

#[test]
fn improvement_respects_limits() {
    let mut total = 0.0;
    for limit in ["4", "8", "9", "12"] {
        let e = env(vec![prov(
            "default",
            json!({"limits": {"resources": {"cpu": limit}}}),
        )]);
        let d = e.solve(&pod("a").req("900m", "").times(9));
        let cpus: i64 = d
            .nodes
            .iter()
            .map(|n| {
                let t = fake_types()
                    .into_iter()
                    .find(|t| t.name == n.instance_type)
                    .unwrap();
                t.capacity["cpu"]
            })
            .sum();
        assert!(
            cpus <= karpenter::api::quantity::parse_milli(limit).unwrap(),
            "{limit}: {d:?}"
        );
        total += d.total_price_per_hour;
    }
    assert!(total > 0.0);
}

// --- fidelity with Karpenter's suites: labels, node and provisioner states, daemonsets ---

/// A Node from JSON parts; `status` may be null (nothing reported yet).
fn raw_node(
    meta: serde_json::Value,
    taints: serde_json::Value,
    status: serde_json::Value,
) -> k8s_openapi::api::core::v1::Node {
    serde_json::from_value(json!({"metadata": meta, "spec": {"taints": taints}, "status": status}))
        .unwrap()
}

/// A Karpenter-owned node of `default-instance-type` that is still coming up: no
/// `karpenter.sh/initialized`, nothing reported in its status.
fn in_flight(taints: serde_json::Value) -> k8s_openapi::api::core::v1::Node {
    raw_node(
        json!({"name": "n1", "labels": {
            "karpenter.sh/provisioner-name": "default",
            IT: "default-instance-type",
            ZONE: "test-zone-1",
        }}),
        taints,
        serde_json::Value::Null,
    )
}

#[test]
fn exists_on_a_label_some_types_lack_does_not_match_those_types() {
    // Upstream: instance types state absent labels as DoesNotExist, so `Exists` on the GPU
    // count matches only GPU types (before: t3a.nano, which has no GPU label at all).
    let types = aws();
    let d = env(vec![default_prov()])
        .types(types.clone())
        .solve(&[pod("a")
            .required(
                json!([[{"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Exists"}]]),
            )
            .build()]);
    let n = node_of(&d, "a");
    for o in &n.instance_type_options {
        let t = types.iter().find(|t| &t.name == o).unwrap();
        assert!(
            t.labels
                .contains_key("karpenter.k8s.aws/instance-gpu-count"),
            "{o} has no GPU"
        );
    }
    // A custom label that only some types carry: Exists picks them, NotIn the others.
    let e = env(vec![default_prov()]).types(
        karpenter::cloud::instance_types::parse_instance_types(
            "- name: plain\n  capacity: {cpu: '4', memory: 4Gi, pods: '10'}\n  overhead: {}\n  offerings:\n  - {zone: z1, capacityType: on-demand, price: 0.1}\n- name: fast\n  capacity: {cpu: '4', memory: 4Gi, pods: '10'}\n  overhead: {}\n  labels: {disk: nvme}\n  offerings:\n  - {zone: z1, capacityType: on-demand, price: 0.5}\n",
        )
        .unwrap(),
    );
    let exists = pod("x").required(json!([[{"key": "disk", "operator": "Exists"}]]));
    assert_eq!(
        node_of(&e.solve(&[exists.build()]), "x").instance_type_options,
        ["fast"]
    );
    let not_in =
        pod("y").required(json!([[{"key": "disk", "operator": "NotIn", "values": ["nvme"]}]]));
    assert_eq!(
        node_of(&e.solve(&[not_in.build()]), "y").instance_type_options,
        ["plain"]
    );
    // A well-known label no type defines keeps its meaning: left open, it matches.
    let region = pod("z").selector(json!({"topology.kubernetes.io/region": "us-east-1"}));
    assert!(scheduled(&e.solve(&[region.build()]), "z"));
}

#[test]
fn a_node_being_deleted_receives_no_pods() {
    let mut n = owned_node(
        "n1",
        json!({}),
        json!({"cpu": "4", "memory": "8Gi", "pods": "10"}),
        json!([]),
    );
    let e = env(vec![default_prov()]).existing(n.clone(), vec![]);
    assert_eq!(
        e.solve(&[pod("a").build()]).existing_node_of("default/a"),
        Some("n1")
    );
    n.metadata.deletion_timestamp = serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
    let d = env(vec![default_prov()])
        .existing(n, vec![])
        .solve(&[pod("a").build()]);
    assert!(d.existing_node_of("default/a").is_none());
    assert!(scheduled(&d, "a"));
    assert!(
        d.notes
            .iter()
            .any(|n| n == "left out 1 node(s) being deleted: n1"),
        "{:?}",
        d.notes
    );
}

#[test]
fn startup_taints_of_an_in_flight_node_do_not_keep_pods_off_it() {
    // Upstream: "should not launch a second node while the first one's startup taints are on".
    let p = prov(
        "default",
        json!({"startupTaints": [{"key": "example.com/booting", "effect": "NoSchedule"}]}),
    );
    let taints = json!([
        {"key": "example.com/booting", "effect": "NoSchedule"},
        {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
    ]);
    let pods = pod("a").req("1", "").times(3);
    let d = env(vec![p.clone()])
        .existing(in_flight(taints.clone()), vec![])
        .solve(&pods);
    assert!(d.nodes.is_empty(), "{d:?}");
    assert_eq!(d.existing_nodes[0].pods.len(), 3);
    // Its instance type's allocatable is what it offers: 3900m cpu, so a fourth pod needs a node.
    let d = env(vec![p.clone()])
        .existing(in_flight(taints.clone()), vec![])
        .solve(&pod("a").req("1", "").times(4));
    assert_eq!(d.existing_nodes[0].pods.len(), 3);
    assert_eq!(d.nodes.len(), 1);
    // Once initialized, a taint still on the node is real.
    let mut ready = in_flight(taints);
    ready
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("karpenter.sh/initialized".into(), "true".into());
    ready.status =
        serde_json::from_value(json!({"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "5"}}))
            .unwrap();
    let d = env(vec![p]).existing(ready, vec![]).solve(&pods);
    assert!(d.existing_nodes.is_empty());
    assert_eq!(d.nodes.len(), 1);
}

#[test]
fn not_ready_and_unreachable_taints_of_a_node_coming_up_are_ignored() {
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let taints = json!([{"key": key, "effect": "NoSchedule"}]);
        let d = env(vec![default_prov()])
            .existing(in_flight(taints.clone()), vec![])
            .solve(&[pod("a").build()]);
        assert_eq!(d.existing_node_of("default/a"), Some("n1"), "{key}");
        assert!(d.nodes.is_empty(), "{key}");
        // On an initialized node the taint is honoured, as kube-scheduler does.
        let node = owned_node(
            "n2",
            json!({}),
            json!({"cpu": "4", "memory": "4Gi", "pods": "5"}),
            taints,
        );
        let d = env(vec![default_prov()])
            .existing(node, vec![])
            .solve(&[pod("a").build()]);
        assert!(d.existing_node_of("default/a").is_none(), "{key}");
    }
    // A NoExecute not-ready taint is not one of the ephemeral ones.
    let taints = json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]);
    let d = env(vec![default_prov()])
        .existing(in_flight(taints), vec![])
        .solve(&[pod("a").build()]);
    assert!(d.existing_node_of("default/a").is_none());
}

#[test]
fn unowned_nodes_and_nodes_without_allocatable_are_left_out() {
    let roomy = json!({"cpu": "16", "memory": "64Gi", "pods": "100"});
    let unowned = node(
        "static-1",
        json!({ZONE: "test-zone-1"}),
        roomy.clone(),
        json!([]),
    );
    let silent = raw_node(
        json!({"name": "quiet", "labels": {
            "karpenter.sh/provisioner-name": "default",
            "karpenter.sh/initialized": "true",
        }}),
        json!([]),
        serde_json::Value::Null,
    );
    let d = env(vec![default_prov()])
        .existing(unowned, vec![])
        .existing(silent, vec![])
        .solve(&[pod("a").build()]);
    assert!(d.existing_nodes.is_empty(), "{d:?}");
    assert_eq!(d.nodes.len(), 1);
    assert!(
        d.notes.iter().any(|n| n.starts_with(
            "left out 1 existing node(s) that Karpenter does not own (no karpenter.sh/provisioner-name label): static-1"
        )),
        "{:?}",
        d.notes
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("report no allocatable resources") && n.ends_with(": quiet")),
        "{:?}",
        d.notes
    );
    // Unowned nodes still count for topology: a pod there keeps anti-affine pods away.
    let guard = pod("guard")
        .labels(json!({"app": "web"}))
        .spec("nodeName", json!("static-1"))
        .build();
    let e = env(vec![default_prov()]).existing(
        node("static-1", json!({ZONE: "test-zone-1"}), roomy, json!([])),
        vec![guard],
    );
    let d = e.solve(&[pod("web")
        .labels(json!({"app": "web"}))
        .pod_term("podAntiAffinity", ZONE, json!({"app": "web"}))
        .build()]);
    assert_ne!(node_of(&d, "web").zones, ["test-zone-1"]);
}

#[test]
fn daemonsets_not_yet_on_an_in_flight_node_take_room_once() {
    let ds = daemonset(
        "agent",
        json!({"containers": [{"name": "d", "resources": {"requests": {"cpu": "1"}}}]}),
    );
    let pods = pod("a").req("1", "").times(3);
    // Not bound yet: 3900m - 1 cpu leaves room for two pods.
    let d = env(vec![default_prov()])
        .ds(ds.clone())
        .existing(in_flight(json!([])), vec![])
        .solve(&pods);
    assert_eq!(d.existing_nodes[0].pods.len(), 2);
    // Already bound: counted as the bound pod it is, not twice.
    let mut agent = pod("agent-x").req("1", "").spec("nodeName", json!("n1")).0;
    agent["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u"}]);
    let d = env(vec![default_prov()])
        .ds(ds)
        .existing(
            in_flight(json!([])),
            vec![serde_json::from_value(agent).unwrap()],
        )
        .solve(&pods);
    assert_eq!(d.existing_nodes[0].pods.len(), 2);
}

/// A provisioner from JSON metadata and spec.
fn prov_meta(
    meta: serde_json::Value,
    spec: serde_json::Value,
    status: serde_json::Value,
) -> karpenter::api::Provisioner {
    serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
        "metadata": meta, "spec": spec, "status": status,
    }))
    .unwrap()
}

#[test]
fn a_provisioner_being_deleted_launches_nothing() {
    let going = prov_meta(
        json!({"name": "going", "deletionTimestamp": "2026-01-01T00:00:00Z"}),
        json!({"weight": 100}),
        json!({}),
    );
    let d = env(vec![going.clone(), prov("default", json!({}))]).solve(&[pod("a").build()]);
    assert_eq!(node_of(&d, "a").provisioner, "default");
    let d = env(vec![going]).solve(&[pod("a").build()]);
    assert_eq!(
        reason(&d, "a", "going"),
        "provisioner going is being deleted; it launches no new nodes"
    );
}

#[test]
fn daemonset_overhead_counts_when_the_pod_requests_nothing() {
    // small-instance-type has 1900m allocatable: a 3-cpu daemonset does not fit there, so no
    // pod (even one with no requests) may be placed on it.
    for spec in [
        json!({"containers": [{"name": "d", "resources": {"requests": {"cpu": "3"}}}]}),
        // Effective request: max(sum of containers with limits filling requests, largest init).
        json!({
            "containers": [{"name": "d", "resources": {"limits": {"cpu": "1"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "3"}}}],
        }),
    ] {
        let e = env(vec![default_prov()]).ds(daemonset("ds", spec));
        let d = e.solve(&[pod("a").build()]);
        let n = node_of(&d, "a");
        assert_eq!(n.instance_type, "default-instance-type");
        assert!(!n
            .instance_type_options
            .contains(&"small-instance-type".to_string()));
    }
    let e = env(vec![default_prov()]).ds(daemonset(
        "huge",
        json!({"containers": [{"name": "d", "resources": {"requests": {"memory": "512Gi"}}}]}),
    ));
    let d = e.solve(&[pod("a").build()]);
    let r = reason(&d, "a", "default");
    assert!(
        r.starts_with("the daemonsets of provisioner default do not fit on any instance type that fits the pod: they request 512Gi memory and "),
        "{r}"
    );
}

#[test]
fn a_provisioner_over_its_limits_launches_nothing() {
    let over = prov_meta(
        json!({"name": "default"}),
        json!({"limits": {"resources": {"cpu": "8"}}}),
        json!({"resources": {"cpu": "10"}}),
    );
    let d = env(vec![over]).solve(&[pod("a").build()]);
    assert_eq!(
        reason(&d, "a", "default"),
        "provisioner default already uses 10 cpu (status.resources), over its limit of 8; it launches nothing until usage drops below the limit"
    );
    // At the limit is not over it, but leaves no room: the usage counts even when the nodes
    // behind it are not in the input (the controller would refuse that launch too).
    let at = prov_meta(
        json!({"name": "default"}),
        json!({"limits": {"resources": {"cpu": "8"}}}),
        json!({"resources": {"cpu": "8"}}),
    );
    let d = env(vec![at]).solve(&[pod("a").build()]);
    assert!(
        reason(&d, "a", "default")
            .starts_with("cpu limit 8 of provisioner default reached: 8 used, 0 left"),
        "{d:?}"
    );
    // Below it, a node that fits what is left is launched.
    let below = prov_meta(
        json!({"name": "default"}),
        json!({"limits": {"resources": {"cpu": "8"}}}),
        json!({"resources": {"cpu": "4"}}),
    );
    assert!(scheduled(&env(vec![below]).solve(&[pod("a").build()]), "a"));
}

#[test]
fn simulate_honours_status_limits_and_says_which_nodes_it_left_out() {
    let docs: Vec<serde_json::Value> = vec![
        json!({"apiVersion": "karpenter.sh/v1alpha5", "kind": "Provisioner",
               "metadata": {"name": "default"},
               "spec": {"limits": {"resources": {"cpu": "8"}}},
               "status": {"resources": {"cpu": "12"}}}),
        json!({"apiVersion": "v1", "kind": "Node",
               "metadata": {"name": "static-1", "labels": {ZONE: "us-east-1a"}},
               "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}}}),
        pod("a").req("1", "").0,
    ];
    let d = simulate(&docs, aws(), &SimulateOptions::default()).unwrap();
    assert!(d.nodes.is_empty() && d.existing_nodes.is_empty(), "{d:?}");
    assert!(reason(&d, "a", "default").contains("over its limit of 8"));
    let table = d.render_table();
    assert!(
        table.contains("note: left out 1 existing node(s) that Karpenter does not own"),
        "{table}"
    );
}

#[test]
fn a_type_with_no_known_price_is_still_chosen_and_priced_as_unknown() {
    let types = karpenter::cloud::instance_types::parse_instance_types(
        "- name: priced\n  capacity: {cpu: '2', memory: 4Gi, pods: '10'}\n  offerings:\n  - {zone: test-zone-1, capacityType: on-demand, price: 0.1}\n\
         - name: unpriced-large\n  capacity: {cpu: '16', memory: 64Gi, pods: '10'}\n  offerings:\n  - {zone: test-zone-1, capacityType: on-demand}\n",
    )
    .unwrap();
    // Only the unpriced type fits: it is chosen, not left out.
    let d = env(vec![default_prov()])
        .types(types.clone())
        .solve(&[pod("big").req("8", "1Gi").build()]);
    let n = node_of(&d, "big");
    assert_eq!(n.instance_type, "unpriced-large");
    assert_eq!(n.price_per_hour, 0.0);
    assert!(!n.price_is_upper_bound);
    assert_eq!(d.total_price_per_hour, 0.0, "finite, not f64::MAX");
    assert!(
        d.notes.iter().any(|s| s.contains("no known price")),
        "{:?}",
        d.notes
    );
    // The decision still serialises (no infinite total).
    let v = serde_json::to_value(&d).unwrap();
    assert!(v["totalPricePerHour"].is_number(), "{v}");
    // When a priced type fits, it is preferred.
    let d = env(vec![default_prov()])
        .types(types)
        .solve(&[pod("small").req("1", "1Gi").build()]);
    assert_eq!(node_of(&d, "small").instance_type, "priced");
}

// --- reusing the catalog pass ---

#[test]
fn the_catalog_pass_is_reused_only_while_provisioners_and_type_lists_are_the_same() {
    use karpenter::scheduling::{Scheduler, SchedulerInput};
    use std::sync::Arc;
    let types: Arc<[karpenter::scheduling::InstanceType]> = fake_types().into();
    let input = |p: karpenter::api::Provisioner, t: &Arc<[karpenter::scheduling::InstanceType]>| {
        SchedulerInput {
            instance_types_by_provisioner: [("default".to_string(), t.clone())].into(),
            provisioners: vec![p],
            ..Default::default()
        }
    };
    let pods = [
        pod("a").req("1", "512Mi").build(),
        pod("b").req("2", "1Gi").build(),
    ];
    let fresh = Scheduler::new(input(default_prov(), &types));
    let prepared = fresh.prepared();
    let want = fresh.solve(&pods).unwrap();

    // Same provisioner, the very same list: reused, and the same decision.
    let again = Scheduler::with_prepared(input(default_prov(), &types), Some(prepared.clone()));
    assert!(Arc::ptr_eq(&prepared, &again.prepared()));
    assert_eq!(again.solve(&pods).unwrap(), want);

    // A requirement changed: prepared afresh, and it shows in the decision.
    let arm = prov(
        "default",
        json!({"requirements": [{"key": ARCH, "operator": "In", "values": ["arm64"]}]}),
    );
    let changed = Scheduler::with_prepared(input(arm.clone(), &types), Some(prepared.clone()));
    assert!(!Arc::ptr_eq(&prepared, &changed.prepared()));
    let d = changed.solve(&pods).unwrap();
    assert_eq!(d, Scheduler::new(input(arm, &types)).solve(&pods).unwrap());
    assert!(
        d.nodes
            .iter()
            .all(|n| n.instance_type == "arm-instance-type"),
        "{d:?}"
    );

    // An equal list that is another list, or a shared list besides: not reused.
    let copy: Arc<[karpenter::scheduling::InstanceType]> = types.to_vec().into();
    let other = Scheduler::with_prepared(input(default_prov(), &copy), Some(prepared.clone()));
    assert!(!Arc::ptr_eq(&prepared, &other.prepared()));
    let mut shared = input(default_prov(), &types);
    shared.instance_types = fake_types();
    let with_shared = Scheduler::with_prepared(shared, Some(prepared.clone()));
    assert!(!Arc::ptr_eq(&prepared, &with_shared.prepared()));
}
