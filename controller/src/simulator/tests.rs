use super::*;

#[test]
fn the_guides_walkthrough_ends_with_no_node_and_no_instance() {
    let w = run(DEFAULT_SCENARIO).unwrap();
    let text = w.render();
    assert!(w.final_state.nodes.is_empty(), "{text}");
    assert!(w.final_state.instances.is_empty(), "{text}");
    assert!(w.final_state.pods.is_empty(), "{text}");
    assert!(w.final_state.launches >= 1);
    let find = |needle: &str| -> &LogLine {
        w.timeline
            .iter()
            .find(|l| l.message.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{text}"))
    };
    let found = find("Found 10 provisionable pod(s)");
    assert_eq!(found.logger, "controller.provisioning/default");
    assert_eq!(
        found.time, "2021-11-23T04:46:12.000Z",
        "batch closed 1 s after the scale"
    );
    find("Computed packing for");
    let launched = find("Launched instance: i-");
    assert!(
        launched.message.contains("zone: us-east-1"),
        "{}",
        launched.message
    );
    let bound: usize = w
        .timeline
        .iter()
        .filter(|l| l.message.starts_with("Bound "))
        .filter_map(|l| l.fields.get("pods").and_then(|p| p.parse::<usize>().ok()))
        .sum();
    assert_eq!(bound, 10, "{text}");
    let ttl = find("Added TTL to empty node");
    let trig = find("Triggering termination after 30s for empty node");
    let (a, b) = (
        clock::parse(&ttl.time).unwrap(),
        clock::parse(&trig.time).unwrap(),
    );
    assert_eq!(b.duration_since(a).as_secs(), 30, "{text}");
    find("Cordoned node");
    find("Deleted node");
    assert_eq!(w.decisions.len(), 1);
    assert_eq!(w.decisions[0].decision.scheduled_count(), 10);
}

#[test]
fn a_capacity_error_moves_the_launch_to_another_offering() {
    let text = DEFAULT_SCENARIO.replace(
        "  - at: 11s\n",
        "  - capacityError: {instanceType: m5.large, zone: us-east-1a, capacityType: spot}\n  - capacityError: {instanceType: m5.2xlarge, zone: us-east-1a, capacityType: spot}\n  - at: 11s\n",
    );
    let w = run(&text).unwrap();
    for d in &w.decisions {
        for l in &d.launched {
            assert!(
                !(l.zone == "us-east-1a" && l.capacity_type == "spot"),
                "{l:?}"
            );
        }
    }
    assert!(w.final_state.instances.is_empty());
}

#[test]
fn deleting_a_node_with_pods_drains_it_and_the_pods_come_back_elsewhere() {
    let text = DEFAULT_SCENARIO.replace(
        "  - at: 3m\n",
        "  - at: 1m\n    delete: {kind: Node, name: ip-10-0-0-1.ec2.internal}\n  - at: 3m\n",
    );
    let w = run(&text).unwrap();
    let text = w.render();
    assert!(text.contains("Evicted pod default/inflate-"), "{text}");
    assert!(
        w.decisions.len() >= 2,
        "the evicted pods were provisioned for again\n{text}"
    );
    assert!(
        w.final_state.nodes.is_empty() && w.final_state.instances.is_empty(),
        "{text}"
    );
}

#[test]
fn an_invalid_provisioner_is_refused_like_the_webhook_would() {
    let text = DEFAULT_SCENARIO.replace("ttlSecondsAfterEmpty: 30", "ttlSecondsAfterEmpty: -5");
    let e = run(&text).unwrap_err();
    assert!(e.to_string().contains("Provisioner default"), "{e}");
}
