//! `kubectl-karpenter explain` and `nodes` offline, as a user runs them on a support bundle:
//! one case per constraint that can keep a pod pending, asserting the words the user reads,
//! the node and provisioner explanations, exit statuses, and golden tables.
//!
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files under `tests/data/explain/golden/`.

mod support;

use support::{data_dir, plugin, plugin_with_stdin, scratch_dir, Run};

/// The time the bundle was "taken": ages and TTLs are evaluated here.
const NOW: &str = "2026-12-01T12:00:00Z";

fn explain_bundle(target: &str, extra: &[&str]) -> Run {
    let mut args = vec!["explain", target, "-f", "explain/bundle.yaml", "--now", NOW];
    args.extend_from_slice(extra);
    plugin(&args)
}

/// Explains `pod/p` over a Provisioner and a pod written for one case (plus `more` objects).
fn explain_case(name: &str, provisioners: &str, pod_spec: &str, more: &str) -> Run {
    let dir = scratch_dir(&format!("explain-{name}"));
    let text = format!(
        "{provisioners}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\n  labels: {{app: p}}\nspec:\n{pod_spec}\n{more}"
    );
    let file = dir.join("case.yaml");
    if let Err(e) = std::fs::write(&file, text) {
        panic!("cannot write {}: {e}", file.display());
    }
    let path = file.display().to_string();
    plugin(&["explain", "pod/p", "-f", &path, "--now", NOW])
}

const DEFAULT_PROVISIONER: &str = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: default
spec:
  requirements:
  - key: topology.kubernetes.io/zone
    operator: In
    values: [us-east-1a, us-east-1b]";

const ONE_CPU: &str = "  containers:
  - name: c
    image: pause
    resources:
      requests: {cpu: \"1\"}";

fn assert_explained(r: &Run, words: &[&str]) {
    assert_eq!(r.code, Some(0), "{r:?}");
    for w in words {
        assert!(r.stdout.contains(w), "missing {w:?} in:\n{}", r.stdout);
    }
}

#[test]
fn an_untolerated_taint_is_named() {
    let tainted = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: team
spec:
  taints:
  - {key: team, value: ml, effect: NoSchedule}";
    let r = explain_case("taint", tainted, ONE_CPU, "");
    assert_explained(
        &r,
        &[
            "fits no existing node and no new node",
            "team (weight 0): no: provisioner team has taint team=ml:NoSchedule that the pod does not tolerate",
        ],
    );
}

#[test]
fn a_zone_requirement_shows_both_sides() {
    let spec = format!("  nodeSelector:\n    topology.kubernetes.io/zone: us-east-1f\n{ONE_CPU}");
    let r = explain_case("zone", DEFAULT_PROVISIONER, &spec, "");
    assert_explained(&r, &["us-east-1f", "us-east-1a, us-east-1b"]);
}

#[test]
fn an_architecture_and_a_capacity_type_show_both_sides() {
    let spec = format!("  nodeSelector:\n    kubernetes.io/arch: arm64\n{ONE_CPU}");
    let r = explain_case("arch", DEFAULT_PROVISIONER, &spec, "");
    // Defaulting gives the provisioner amd64.
    assert_explained(&r, &["arm64", "amd64"]);
    let spot = format!("  nodeSelector:\n    karpenter.sh/capacity-type: spot\n{ONE_CPU}");
    let r = explain_case("spot", DEFAULT_PROVISIONER, &spot, "");
    assert_explained(&r, &["spot", "on-demand"]);
}

#[test]
fn a_custom_label_shows_both_sides() {
    let labelled = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: default
spec:
  labels:
    team: payments";
    let spec = format!("  nodeSelector:\n    team: search\n{ONE_CPU}");
    let r = explain_case("label", labelled, &spec, "");
    assert_explained(&r, &["search", "payments"]);
}

#[test]
fn a_pod_too_big_for_every_type_names_the_largest_one() {
    let spec = "  containers:
  - name: c
    image: pause
    resources:
      requests: {cpu: \"900\"}";
    let r = explain_case("big", DEFAULT_PROVISIONER, spec, "");
    assert_explained(
        &r,
        &[
            "pod requests 900 cpu",
            "the largest instance type allowed by provisioner default (",
        ],
    );
}

#[test]
fn a_gpu_that_no_allowed_type_offers() {
    let spec = "  containers:
  - name: c
    image: cuda
    resources:
      requests: {nvidia.com/gpu: \"1\"}
      limits: {nvidia.com/gpu: \"1\"}";
    let r = explain_case("gpu", DEFAULT_PROVISIONER, spec, "");
    assert_explained(
        &r,
        &["no instance type allowed by provisioner default offers nvidia.com/gpu"],
    );
}

#[test]
fn limits_say_used_left_and_what_the_node_would_add() {
    let limited = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: default
spec:
  limits:
    resources:
      cpu: \"4\"
status:
  resources:
    cpu: \"3\"";
    let spec = "  containers:
  - name: c
    image: pause
    resources:
      requests: {cpu: \"1500m\"}";
    let r = explain_case("limits", limited, spec, "");
    assert_explained(
        &r,
        &[
            "cpu limit 4 of provisioner default reached: 3 used, 1 left; a node for the pod adds at least",
        ],
    );
}

#[test]
fn topology_spread_shows_the_domain_counts() {
    // Zones a and c hold two and zero matching pods; with nodeAffinityPolicy Ignore the pod's
    // own zone pin does not narrow the domains, so zone a would skew the spread to 3.
    let spec = format!(
        "  nodeSelector:\n    topology.kubernetes.io/zone: us-east-1a\n  topologySpreadConstraints:\n  - maxSkew: 1\n    topologyKey: topology.kubernetes.io/zone\n    whenUnsatisfiable: DoNotSchedule\n    nodeAffinityPolicy: Ignore\n    labelSelector:\n      matchLabels: {{app: p}}\n{ONE_CPU}"
    );
    let mut more = String::new();
    for (node, zone) in [("node-a", "us-east-1a"), ("node-c", "us-east-1c")] {
        more.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    karpenter.sh/provisioner-name: default\n    karpenter.sh/initialized: \"true\"\n    node.kubernetes.io/instance-type: m5.large\n    topology.kubernetes.io/zone: {zone}\n    kubernetes.io/hostname: {node}\n    kubernetes.io/arch: amd64\n    kubernetes.io/os: linux\n    karpenter.sh/capacity-type: on-demand\nstatus:\n  allocatable: {{cpu: 1930m, memory: 7220Mi, pods: \"29\"}}\n  capacity: {{cpu: \"2\", memory: 7934Mi, pods: \"29\"}}\n  conditions:\n  - {{type: Ready, status: \"True\"}}\n"
        ));
    }
    for i in 0..2 {
        more.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: running-{i}\n  namespace: default\n  labels: {{app: p}}\nspec:\n  nodeName: node-a\n  containers:\n  - name: c\n    image: pause\nstatus:\n  phase: Running\n"
        ));
    }
    let provisioner = "apiVersion: karpenter.sh/v1alpha5
kind: Provisioner
metadata:
  name: default
spec:
  requirements:
  - key: topology.kubernetes.io/zone
    operator: In
    values: [us-east-1a, us-east-1c]";
    let r = explain_case("spread", provisioner, &spec, &more);
    assert_explained(&r, &["maxSkew 1", "us-east-1a=2", "us-east-1c=0"]);
}

#[test]
fn zone_anti_affinity_is_named() {
    let spec = format!(
        "  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n      - topologyKey: topology.kubernetes.io/zone\n        labelSelector:\n          matchLabels: {{app: db}}\n{ONE_CPU}"
    );
    let mut more = String::new();
    for (node, zone) in [("node-a", "us-east-1a"), ("node-b", "us-east-1b")] {
        more.push_str(&format!(
            "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels:\n    karpenter.sh/provisioner-name: default\n    karpenter.sh/initialized: \"true\"\n    node.kubernetes.io/instance-type: m5.large\n    topology.kubernetes.io/zone: {zone}\n    kubernetes.io/hostname: {node}\n    kubernetes.io/arch: amd64\n    kubernetes.io/os: linux\n    karpenter.sh/capacity-type: on-demand\nstatus:\n  allocatable: {{cpu: 1930m, memory: 7220Mi, pods: \"29\"}}\n  capacity: {{cpu: \"2\", memory: 7934Mi, pods: \"29\"}}\n  conditions:\n  - {{type: Ready, status: \"True\"}}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: db-{zone}\n  namespace: default\n  labels: {{app: db}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: pause\nstatus:\n  phase: Running\n"
        ));
    }
    let r = explain_case("anti", DEFAULT_PROVISIONER, &spec, &more);
    assert_explained(
        &r,
        &[
            "zone pod anti-affinity cannot be satisfied on a new node of provisioner default",
            "already run in us-east-1a=1 us-east-1b=1",
        ],
    );
}

#[test]
fn a_near_miss_label_key_names_the_well_known_one() {
    let r = explain_bundle("pod/trainer-0", &["-n", "ml"]);
    assert_explained(
        &r,
        &[
            "topology.kubernetes.io/zones",
            "topology.kubernetes.io/zone'?",
        ],
    );
}

#[test]
fn a_pending_pod_that_fits_says_what_it_would_get_and_why_not_the_heavier_provisioner() {
    let r = explain_bundle("pod/inflate-0", &[]);
    assert_explained(
        &r,
        &[
            "Pod default/inflate-0: pending; ",
            // team-gpu (weight 10) is tried first and its taint stops the pod.
            "team-gpu (weight 10): no: provisioner team-gpu has taint team=ml:NoSchedule",
            "It would get:",
            "capacity type:  on-demand",
        ],
    );
    // Weight order: the heavier provisioner is listed first.
    let gpu = r.stdout.find("team-gpu (weight 10)");
    let default = r.stdout.find("default (weight 0)");
    assert!(gpu < default, "{}", r.stdout);
    assert!(
        r.stdout.contains("default (weight 0): fits:"),
        "{}",
        r.stdout
    );
}

#[test]
fn a_bound_pod_names_its_node_and_the_decision_that_launched_it() {
    let r = explain_bundle("pod/web-0", &[]);
    assert_explained(
        &r,
        &[
            "bound to node ip-10-0-1-10.ec2.internal, launched by provisioner default for this pod",
            "m5.large, m5a.large, m6i.large",
            "EC2 launched m5.large (on-demand): the cheapest option",
        ],
    );
    let r = explain_bundle("pod/batch-0", &["-o", "json"]);
    let v = r.json();
    assert_eq!(v["kind"], "PodExplanation");
    assert_eq!(v["state"], "Bound");
    assert!(v["summary"]
        .as_str()
        .is_some_and(|s| s.contains("placed on it later")));
}

#[test]
fn a_missing_object_exits_1_and_bad_input_exits_2() {
    let r = explain_bundle("pod/nosuch", &[]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr.trim(),
        "error: pods \"nosuch\" not found in any namespace"
    );
    let r = explain_bundle("node/nosuch", &[]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let r = explain_bundle("deployment/web", &[]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(
        r.stderr
            .contains("explain pod/NAME, node/NAME or provisioner/NAME"),
        "{r:?}"
    );
    let r = plugin(&["explain", "pod/x", "-f", "explain/no-such-file.yaml"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.starts_with("error: the path"), "{r:?}");
    // A malformed file is one line with the file and line, not a panic.
    let r = plugin_with_stdin(&["explain", "pod/x", "-f", "-"], Some("a: [\n"));
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.starts_with("error: <stdin>"), "{r:?}");
}

#[test]
fn no_kubeconfig_is_one_clear_line() {
    let r = plugin(&["explain", "pod/x"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(r.stderr.contains("kubeconfig"), "{r:?}");
    let r = plugin(&["nodes", "--kubeconfig", "/nonexistent/config"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("/nonexistent/config"), "{r:?}");
}

#[test]
fn an_empty_node_says_when_the_ttl_deletes_it() {
    let r = explain_bundle("node/ip-10-0-3-20.ec2.internal", &[]);
    assert_explained(
        &r,
        &[
            "empty since 2026-12-01T11:59:50Z (10s ago); ttlSecondsAfterEmpty 30 deletes it at 2026-12-01T12:00:20Z (in 20s)",
            "expires at 2026-12-31T11:50:00Z",
        ],
    );
}

#[test]
fn expiry_blockers_are_each_named() {
    let r = explain_bundle("node/ip-10-0-1-10.ec2.internal", &[]);
    assert_explained(
        &r,
        &[
            "launched for 1 pod(s): default/web-0",
            "not empty: 2 pod(s)",
            "pod default/batch-0 has annotation karpenter.sh/do-not-evict",
        ],
    );
}

#[test]
fn a_terminating_node_says_what_holds_the_drain() {
    let r = explain_bundle("node/ip-10-0-1-30.ec2.internal", &[]);
    assert_explained(
        &r,
        &[
            "terminating since 2026-12-01T11:58:00Z (2m0s ago)",
            "the drain is held: PodDisruptionBudget shop/db-pdb allows no disruption of pod shop/db-0",
        ],
    );
}

#[test]
fn a_node_karpenter_did_not_launch_is_never_touched() {
    let r = explain_bundle("no/ip-10-0-2-99.ec2.internal", &[]);
    assert_explained(
        &r,
        &[
            "not launched by Karpenter",
            "never empties, expires or terminates it",
        ],
    );
}

#[test]
fn a_provisioner_shows_defaults_limits_and_nodes() {
    let r = explain_bundle("provisioner/default", &[]);
    assert_explained(
        &r,
        &[
            "Provisioner default (weight 0): valid",
            "kubernetes.io/arch In [amd64]   (default)",
            "topology.kubernetes.io/zone In [us-east-1a, us-east-1c]\n",
            "Instance types allowed: ",
            "Nodes (3): ",
            "empty nodes are deleted 30s after they become empty",
        ],
    );
    let v = explain_bundle("provisioner/default", &["-o", "json"]).json();
    let cpu = v["limits"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["resource"] == "cpu"))
        .cloned()
        .unwrap_or_default();
    // The larger of status.resources (6) and the capacity of its three nodes (2 + 4 + 2).
    assert_eq!(cpu["used"], "8", "{v}");
    assert_eq!(cpu["left"], "92", "{v}");
}

fn golden(name: &str, actual: &str) {
    let path = data_dir().join("explain/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&path, actual) {
            panic!("cannot write {}: {e}", path.display());
        }
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} ({e}); run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        actual, expected,
        "{name} drifted; if the change is intended, run with UPDATE_GOLDEN=1"
    );
}

#[test]
fn golden_tables() {
    let nodes = plugin(&["nodes", "-f", "explain/bundle.yaml", "--now", NOW]);
    assert_eq!(nodes.code, Some(0), "{nodes:?}");
    golden("nodes.txt", &nodes.stdout);
    let wide = plugin(&[
        "nodes",
        "-f",
        "explain/bundle.yaml",
        "--now",
        NOW,
        "-o",
        "wide",
    ]);
    golden("nodes-wide.txt", &wide.stdout);
    golden(
        "explain-pod-pending.txt",
        &explain_bundle("pod/inflate-0", &[]).stdout,
    );
    golden(
        "explain-node.txt",
        &explain_bundle("node/ip-10-0-1-10.ec2.internal", &[]).stdout,
    );
    golden(
        "explain-provisioner.txt",
        &explain_bundle("provisioner/default", &[]).stdout,
    );
}

#[test]
fn nodes_totals_and_documents() {
    let v = plugin(&[
        "nodes",
        "-f",
        "explain/bundle.yaml",
        "--now",
        NOW,
        "-o",
        "json",
    ])
    .json();
    assert_eq!(v["kind"], "List");
    let items = v["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 4);
    // Sum of on-demand prices: m5.large x2, m5.xlarge, t3.medium.
    let total = v["summary"]["pricePerHour"].as_f64().unwrap_or_default();
    assert!((total - (0.096 * 2.0 + 0.192 + 0.0416)).abs() < 1e-9, "{v}");
    let month = v["summary"]["pricePerMonth"].as_f64().unwrap_or_default();
    assert!((month - (total * 730.0 * 100.0).round() / 100.0).abs() < 1e-9);
    let web = items
        .iter()
        .find(|i| i["name"] == "ip-10-0-1-10.ec2.internal")
        .cloned()
        .unwrap_or_default();
    assert_eq!(web["cpuRequestedMilli"], 1500);
    assert_eq!(web["cpuAllocatableMilli"], 1930);
    let only = plugin(&[
        "nodes",
        "-f",
        "explain/bundle.yaml",
        "--provisioner",
        "default",
        "-o",
        "yaml",
    ]);
    assert_eq!(only.code, Some(0), "{only:?}");
    assert_eq!(
        only.stdout.matches("kind: NodeView").count(),
        3,
        "{}",
        only.stdout
    );
}

#[test]
fn the_walkthrough_json_explains_offline() {
    let walk = plugin(&["walkthrough", "-o", "json"]);
    assert_eq!(walk.code, Some(0), "{walk:?}");
    let r = plugin_with_stdin(&["nodes", "-f", "-", "-o", "json"], Some(&walk.stdout));
    assert_eq!(r.code, Some(0), "{r:?}");
    let v = r.json();
    // The walkthrough ends after the TTL removed the empty node: nothing is left.
    assert_eq!(v["summary"]["nodes"], 0, "{v}");
    let r = plugin_with_stdin(
        &["explain", "provisioner/default", "-f", "-"],
        Some(&walk.stdout),
    );
    assert_explained(
        &r,
        &["Provisioner default (weight 0): valid", "Nodes (0): none"],
    );
}
