//! One accept and one reject case (at least) per validation rule, plus property tests.

use super::*;
use crate::api::aws::{BlockDevice, BlockDeviceMapping, MetadataOptions};
use crate::api::defaults::default_provisioner;
use crate::api::provisioner::{Consolidation, Limits, ProviderRef};
use proptest::prelude::*;

fn base() -> Provisioner {
    let mut p = Provisioner::new(
        "default",
        ProvisionerSpec {
            provider_ref: Some(ProviderRef {
                name: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    default_provisioner(&mut p.spec);
    p
}

fn with(f: impl FnOnce(&mut ProvisionerSpec)) -> Report {
    let mut p = base();
    f(&mut p.spec);
    validate_provisioner(&p)
}

fn fields(r: &Report) -> Vec<&str> {
    r.errors.iter().map(|e| e.field.as_str()).collect()
}

fn req(key: &str, op: &str, values: &[&str]) -> Requirement {
    Requirement::new(key, op, values)
}

#[test]
fn defaulted_base_is_valid() {
    let r = validate_provisioner(&base());
    assert!(r.is_valid(), "{r}");
    assert!(r.warnings.is_empty(), "{r}");
}

#[test]
fn name_is_required_and_checked() {
    let mut p = base();
    p.metadata.name = None;
    assert_eq!(fields(&validate_provisioner(&p)), ["metadata.name"]);
    p.metadata.name = Some("Bad_Name".into());
    assert_eq!(fields(&validate_provisioner(&p)), ["metadata.name"]);
    p.metadata.name = Some("gpu-1".into());
    assert!(validate_provisioner(&p).is_valid());
}

#[test]
fn ttls_cannot_be_negative() {
    let r = with(|s| {
        s.ttl_seconds_after_empty = Some(-1);
        s.ttl_seconds_until_expired = Some(-5);
    });
    assert_eq!(
        fields(&r),
        ["spec.ttlSecondsAfterEmpty", "spec.ttlSecondsUntilExpired"]
    );
    assert!(with(|s| {
        s.ttl_seconds_after_empty = Some(0);
        s.ttl_seconds_until_expired = Some(2_592_000);
    })
    .is_valid());
}

#[test]
fn ttl_after_empty_conflicts_with_consolidation() {
    let r = with(|s| {
        s.ttl_seconds_after_empty = Some(30);
        s.consolidation = Some(Consolidation {
            enabled: Some(true),
        });
    });
    assert_eq!(fields(&r), ["spec.ttlSecondsAfterEmpty"]);
    assert!(r.errors[0].message.contains("consolidation"));
    assert!(with(|s| {
        s.ttl_seconds_after_empty = Some(30);
        s.consolidation = Some(Consolidation {
            enabled: Some(false),
        });
    })
    .is_valid());
}

#[test]
fn exactly_one_provider() {
    let r = with(|s| s.provider_ref = None);
    assert_eq!(fields(&r), ["spec"]);
    assert!(r.errors[0].message.contains("neither"));
    let r = with(|s| s.provider = Some(AwsProvider::default()));
    assert!(r.errors[0].message.contains("both"), "{r}");
    let r = with(|s| {
        s.provider_ref = None;
        s.provider = Some(AwsProvider {
            instance_profile: Some("profile".into()),
            ..Default::default()
        });
    });
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.warnings.len(), 1, "inline provider is deprecated");
}

#[test]
fn provider_ref_kind_and_name() {
    let r = with(|s| {
        s.provider_ref = Some(ProviderRef {
            kind: Some("LaunchTemplate".into()),
            name: "".into(),
            api_version: Some("v1".into()),
        })
    });
    assert_eq!(
        fields(&r),
        [
            "spec.providerRef.name",
            "spec.providerRef.kind",
            "spec.providerRef.apiVersion"
        ]
    );
}

#[test]
fn label_keys_and_values() {
    let r = with(|s| {
        s.labels.insert("team".into(), "ml".into());
        s.labels.insert("example.com/tier".into(), "gold".into());
        s.labels
            .insert("node.kubernetes.io/pool".into(), "a".into());
        s.labels.insert(labels::ZONE.into(), "us-east-1a".into());
    });
    assert!(r.is_valid(), "{r}");
    let r = with(|s| {
        s.labels.insert("bad key".into(), "x".into());
        s.labels.insert("team".into(), "not valid!".into());
    });
    assert_eq!(
        fields(&r),
        ["spec.labels[\"bad key\"]", "spec.labels[\"team\"]"]
    );
}

#[test]
fn restricted_label_domains() {
    let r = with(|s| {
        s.labels.insert("kubernetes.io/team".into(), "a".into());
        s.labels.insert("karpenter.sh/custom".into(), "a".into());
        s.labels.insert("karpenter.k8s.aws/foo".into(), "a".into());
        s.labels.insert("x.k8s.io/foo".into(), "a".into());
    });
    assert_eq!(r.errors.len(), 4, "{r}");
    assert!(r
        .errors
        .iter()
        .all(|e| e.message.contains("restricted domain")));
    let r = with(|s| {
        s.labels
            .insert("kops.k8s.io/instancegroup".into(), "a".into());
        s.labels
            .insert("node-restriction.kubernetes.io/team".into(), "a".into());
    });
    assert!(r.is_valid(), "{r}");
}

#[test]
fn hostname_and_provisioner_name_are_forbidden() {
    let r = with(|s| {
        s.labels.insert(labels::HOSTNAME.into(), "x".into());
        s.labels.insert(labels::PROVISIONER_NAME.into(), "x".into());
    });
    assert_eq!(r.errors.len(), 2, "{r}");
    let r = with(|s| {
        s.requirements.push(req(labels::HOSTNAME, "In", &["a"]));
        s.requirements
            .push(req(labels::PROVISIONER_NAME, "In", &["a"]));
    });
    assert_eq!(
        fields(&r),
        ["spec.requirements[5].key", "spec.requirements[6].key"]
    );
}

#[test]
fn the_guides_leading_space_is_caught_with_a_suggestion() {
    let mut p = Provisioner::new(
        "default",
        ProvisionerSpec {
            requirements: vec![
                req(labels::INSTANCE_TYPE, "In", &["m5.large", "m5.2xlarge"]),
                req(labels::ZONE, "In", &["us-east-1a", "us-east-1b"]),
                req(labels::ARCH, "In", &["arm64", "amd64"]),
                req(" karpenter.sh/capacity-type", "In", &["spot", "on-demand"]),
            ],
            provider: Some(AwsProvider {
                instance_profile: Some("KarpenterNodeInstanceProfile-eks-karpenter-demo".into()),
                ..Default::default()
            }),
            ttl_seconds_after_empty: Some(30),
            ..Default::default()
        },
    );
    default_provisioner(&mut p.spec);
    let r = validate_provisioner(&p);
    assert_eq!(fields(&r), ["spec.requirements[3].key"], "{r}");
    let e = &r.errors[0];
    assert_eq!(e.value.as_deref(), Some(" karpenter.sh/capacity-type"));
    let fix = e.fix.as_deref().unwrap_or("");
    assert!(fix.contains("leading space"), "{fix}");
    assert!(fix.contains("\"karpenter.sh/capacity-type\""), "{fix}");
}

#[test]
fn misspelled_well_known_key_is_suggested() {
    let r = with(|s| {
        s.requirements
            .push(req("karpenter.sh/capacity_type", "In", &["spot"]))
    });
    assert_eq!(fields(&r), ["spec.requirements[5].key"]);
    assert!(r.errors[0]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("did you mean \"karpenter.sh/capacity-type\""));
}

#[test]
fn legacy_keys_are_normalised_not_rejected() {
    let r = with(|s| {
        s.requirements.push(req(
            "failure-domain.beta.kubernetes.io/zone",
            "In",
            &["us-east-1a"],
        ))
    });
    assert!(r.is_valid(), "{r}");
}

#[test]
fn operators() {
    for op in OPERATORS {
        let values: &[&str] = match *op {
            "In" | "NotIn" => &["a"],
            "Gt" | "Lt" => &["3"],
            _ => &[],
        };
        let r = with(|s| s.requirements.push(req("example.com/x", op, values)));
        assert!(r.is_valid(), "{op}: {r}");
    }
    let r = with(|s| s.requirements.push(req("example.com/x", "in", &["a"])));
    assert_eq!(fields(&r), ["spec.requirements[5].operator"]);
    assert!(r.errors[0]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("did you mean \"In\""));
    let r = with(|s| s.requirements.push(req("example.com/x", "Equals", &["a"])));
    assert_eq!(fields(&r), ["spec.requirements[5].operator"]);
}

#[test]
fn in_needs_values_and_exists_takes_none() {
    let r = with(|s| s.requirements.push(req("example.com/x", "In", &[])));
    assert_eq!(fields(&r), ["spec.requirements[5].values"]);
    let r = with(|s| s.requirements.push(req("example.com/x", "Exists", &["a"])));
    assert_eq!(fields(&r), ["spec.requirements[5].values"]);
    let r = with(|s| s.requirements.push(req("example.com/x", "NotIn", &[])));
    assert!(r.is_valid(), "{r}");
}

#[test]
fn gt_lt_need_one_non_negative_integer() {
    for bad in [
        &[][..],
        &["1", "2"][..],
        &["-1"][..],
        &["x"][..],
        &["1.5"][..],
    ] {
        let r = with(|s| s.requirements.push(req("example.com/x", "Gt", bad)));
        assert_eq!(fields(&r), ["spec.requirements[5].values"], "{bad:?}");
    }
    let r = with(|s| s.requirements.push(req("example.com/x", "Lt", &["0"])));
    assert!(r.is_valid(), "{r}");
}

#[test]
fn requirement_values_must_be_label_values() {
    let r = with(|s| {
        s.requirements
            .push(req("example.com/x", "In", &[" a", "ok"]))
    });
    assert_eq!(fields(&r), ["spec.requirements[5].values[0]"]);
    assert!(r.errors[0].fix.as_deref().unwrap_or("").contains("\"a\""));
}

#[test]
fn unknown_values_of_well_known_keys() {
    let mut p = base();
    p.spec.requirements[0] = req(labels::CAPACITY_TYPE, "In", &["spott"]);
    let r = validate_provisioner(&p);
    assert_eq!(fields(&r), ["spec.requirements[0].values[0]"]);
    assert!(r.errors[0]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("\"spot\""));
    p.spec.requirements[1] = req(labels::ARCH, "In", &["x86_64"]);
    assert_eq!(validate_provisioner(&p).errors.len(), 2);
}

#[test]
fn taints() {
    let t = |key: &str, value: Option<&str>, effect: &str| Taint {
        key: key.into(),
        value: value.map(Into::into),
        effect: effect.into(),
        time_added: None,
    };
    let r = with(|s| {
        s.taints
            .push(t("nvidia.com/gpu", Some("true"), "NoSchedule"));
        s.taints
            .push(t("nvidia.com/gpu", Some("true"), "NoExecute"));
        s.startup_taints
            .push(t("example.com/init", None, "NoSchedule"));
    });
    assert!(r.is_valid(), "{r}");
    let r = with(|s| {
        s.taints.push(t("bad key", None, "NoSchedule"));
        s.taints.push(t("ok", Some("bad value!"), "NoSchedule"));
        s.taints.push(t("ok2", None, "NoSchedul"));
        s.taints.push(t("ok3", None, ""));
    });
    assert_eq!(
        fields(&r),
        [
            "spec.taints[0].key",
            "spec.taints[1].value",
            "spec.taints[2].effect",
            "spec.taints[3].effect"
        ]
    );
    assert!(r.errors[2]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("\"NoSchedule\""));
}

#[test]
fn duplicate_taints_across_lists() {
    let taint = Taint {
        key: "example.com/x".into(),
        value: Some("a".into()),
        effect: "NoSchedule".into(),
        time_added: None,
    };
    let r = with(|s| {
        s.taints.push(taint.clone());
        s.startup_taints.push(Taint {
            value: Some("b".into()),
            ..taint.clone()
        });
    });
    assert_eq!(fields(&r), ["spec.startupTaints[0]"]);
    assert!(r.errors[0].message.contains("spec.taints[0]"));
}

#[test]
fn kubelet_eviction_rules() {
    let ok = with(|s| {
        let k = s.kubelet_configuration.get_or_insert_with(Default::default);
        k.eviction_hard
            .insert("memory.available".into(), "5%".into());
        k.eviction_hard
            .insert("nodefs.available".into(), "10Gi".into());
        k.eviction_soft
            .insert("memory.available".into(), "10%".into());
        k.eviction_soft_grace_period
            .insert("memory.available".into(), "1m30s".into());
        k.eviction_max_pod_grace_period = Some(60);
    });
    assert!(ok.is_valid(), "{ok}");
    let r = with(|s| {
        let k = s.kubelet_configuration.get_or_insert_with(Default::default);
        k.eviction_hard
            .insert("memory.availble".into(), "5%".into());
        k.eviction_hard
            .insert("nodefs.available".into(), "120%".into());
        k.eviction_hard
            .insert("pid.available".into(), "lots".into());
        k.eviction_soft
            .insert("imagefs.available".into(), "10%".into());
        k.eviction_soft_grace_period
            .insert("nodefs.available".into(), "soon".into());
    });
    assert_eq!(
        fields(&r),
        [
            "spec.kubeletConfiguration.evictionHard[\"memory.availble\"]",
            "spec.kubeletConfiguration.evictionHard[\"nodefs.available\"]",
            "spec.kubeletConfiguration.evictionHard[\"pid.available\"]",
            "spec.kubeletConfiguration.evictionSoftGracePeriod[\"nodefs.available\"]",
            "spec.kubeletConfiguration.evictionSoftGracePeriod[\"nodefs.available\"]",
            "spec.kubeletConfiguration.evictionSoft[\"imagefs.available\"]",
        ],
        "{r}"
    );
    assert!(r.errors[0]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("\"memory.available\""));
}

#[test]
fn kubelet_reserved_and_gc() {
    let ok = with(|s| {
        let k = s.kubelet_configuration.get_or_insert_with(Default::default);
        k.kube_reserved.insert("cpu".into(), "200m".into());
        k.system_reserved.insert("memory".into(), "100Mi".into());
        k.image_gc_high_threshold_percent = Some(85);
        k.image_gc_low_threshold_percent = Some(85);
        k.cluster_dns = vec!["10.100.0.10".into()];
        k.max_pods = Some(110);
    });
    assert!(ok.is_valid(), "{ok}");
    let r = with(|s| {
        let k = s.kubelet_configuration.get_or_insert_with(Default::default);
        k.kube_reserved.insert("gpu".into(), "1".into());
        k.kube_reserved.insert("memory".into(), "-1Gi".into());
        k.system_reserved.insert("cpu".into(), "lots".into());
        k.image_gc_high_threshold_percent = Some(50);
        k.image_gc_low_threshold_percent = Some(60);
        k.cluster_dns = vec!["dns.local".into()];
        k.max_pods = Some(-1);
        k.container_runtime = Some("cri-o".into());
    });
    assert_eq!(
        fields(&r),
        [
            "spec.kubeletConfiguration.clusterDNS[0]",
            "spec.kubeletConfiguration.maxPods",
            "spec.kubeletConfiguration.containerRuntime",
            "spec.kubeletConfiguration.systemReserved[\"cpu\"]",
            "spec.kubeletConfiguration.kubeReserved[\"gpu\"]",
            "spec.kubeletConfiguration.kubeReserved[\"memory\"]",
            "spec.kubeletConfiguration.imageGCHighThresholdPercent",
        ],
        "{r}"
    );
}

#[test]
fn weight_range() {
    assert!(with(|s| s.weight = Some(1)).is_valid());
    assert!(with(|s| s.weight = Some(100)).is_valid());
    assert_eq!(fields(&with(|s| s.weight = Some(0))), ["spec.weight"]);
    assert_eq!(fields(&with(|s| s.weight = Some(101))), ["spec.weight"]);
}

#[test]
fn limits_are_quantities() {
    let ok = with(|s| {
        s.limits = Some(Limits {
            resources: [
                ("cpu".into(), "1000".into()),
                ("memory".into(), "1000Gi".into()),
            ]
            .into(),
        })
    });
    assert!(ok.is_valid(), "{ok}");
    let r = with(|s| {
        s.limits = Some(Limits {
            resources: [
                ("cpu".into(), "-1".into()),
                ("memory".into(), "a lot".into()),
            ]
            .into(),
        })
    });
    assert_eq!(
        fields(&r),
        [
            "spec.limits.resources[\"cpu\"]",
            "spec.limits.resources[\"memory\"]"
        ]
    );
}

#[test]
fn aws_provider_rules() {
    let provider = |f: &dyn Fn(&mut AwsProvider)| {
        with(|s| {
            s.provider_ref = None;
            let mut p = AwsProvider::default();
            f(&mut p);
            s.provider = Some(p);
        })
    };
    let ok = provider(&|p| {
        p.subnet_selector = Some([("karpenter.sh/discovery".into(), "demo".into())].into());
        p.security_group_selector = Some([("aws-ids".into(), "sg-1,sg-2".into())].into());
        p.ami_family = Some("Bottlerocket".into());
        p.metadata_options = Some(MetadataOptions {
            http_tokens: Some("required".into()),
            http_put_response_hop_limit: Some(2),
            ..Default::default()
        });
        p.block_device_mappings = vec![BlockDeviceMapping {
            device_name: Some("/dev/xvda".into()),
            ebs: Some(BlockDevice {
                volume_size: Some("100Gi".into()),
                volume_type: Some("gp3".into()),
                iops: Some(3000),
                throughput: Some(125),
                ..Default::default()
            }),
        }];
    });
    assert!(ok.is_valid(), "{ok}");
    let r = provider(&|p| {
        p.subnet_selector = Some(Default::default());
        p.security_group_selector = Some([("aws-ids".into(), "subnet-1".into())].into());
        p.ami_family = Some("al2".into());
        p.tags
            .insert("kubernetes.io/cluster/demo".into(), "owned".into());
        p.metadata_options = Some(MetadataOptions {
            http_tokens: Some("maybe".into()),
            http_put_response_hop_limit: Some(65),
            ..Default::default()
        });
        p.block_device_mappings = vec![BlockDeviceMapping {
            device_name: None,
            ebs: Some(BlockDevice {
                volume_size: Some("100Ti".into()),
                volume_type: Some("gp2".into()),
                throughput: Some(125),
                ..Default::default()
            }),
        }];
    });
    assert_eq!(
        fields(&r),
        [
            "spec.provider.subnetSelector",
            "spec.provider.securityGroupSelector[\"aws-ids\"]",
            "spec.provider.amiFamily",
            "spec.provider.tags[\"kubernetes.io/cluster/demo\"]",
            "spec.provider.metadataOptions.httpTokens",
            "spec.provider.metadataOptions.httpPutResponseHopLimit",
            "spec.provider.blockDeviceMappings[0].deviceName",
            "spec.provider.blockDeviceMappings[0].ebs.volumeSize",
            "spec.provider.blockDeviceMappings[0].ebs.throughput",
        ],
        "{r}"
    );
    assert!(r.errors[2].fix.as_deref().unwrap_or("").contains("\"AL2\""));
    let r = provider(&|p| {
        p.launch_template = Some("mine".into());
        p.security_group_selector = Some([("a".into(), "b".into())].into());
    });
    assert_eq!(fields(&r), ["spec.provider.securityGroupSelector"]);
}

#[test]
fn node_template_rules() {
    use crate::api::aws::{AWSNodeTemplate, AwsNodeTemplateSpec};
    let ok = AWSNodeTemplate::new(
        "default",
        AwsNodeTemplateSpec {
            subnet_selector: Some([("karpenter.sh/discovery".into(), "demo".into())].into()),
            ..Default::default()
        },
    );
    assert!(validate_node_template(&ok).is_valid());
    let bad = AWSNodeTemplate::new(
        "default",
        AwsNodeTemplateSpec {
            ami_family: Some("Custom".into()),
            launch_template: Some("lt".into()),
            user_data: Some("#!/bin/sh".into()),
            ..Default::default()
        },
    );
    assert_eq!(
        fields(&validate_node_template(&bad)),
        ["spec.amiFamily", "spec.userData", "spec.amiSelector"]
    );
}

fn ebs(size: Option<&str>, snapshot: Option<&str>) -> Report {
    with(|s| {
        s.provider_ref = None;
        s.provider = Some(AwsProvider {
            block_device_mappings: vec![BlockDeviceMapping {
                device_name: Some("/dev/xvda".into()),
                ebs: Some(BlockDevice {
                    volume_size: size.map(Quantity::from),
                    snapshot_id: snapshot.map(String::from),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        });
    })
}

#[test]
fn ebs_volume_size_bounds_are_decimal_like_upstream() {
    for ok in ["1G", "1Gi", "1000M", "20Gi", "58Ti", "64T", "64000G", "1e9"] {
        let r = ebs(Some(ok), None);
        assert!(r.is_valid(), "{ok}: {r}");
    }
    for bad in ["999M", "0.5G", "64Ti", "64001G", "65T", "0", "-1Gi", "lots"] {
        let r = ebs(Some(bad), None);
        assert_eq!(
            fields(&r),
            ["spec.provider.blockDeviceMappings[0].ebs.volumeSize"],
            "{bad}"
        );
        assert!(r.errors[0].message.contains("1G to 64T"), "{bad}: {r}");
        assert_eq!(r.errors[0].value.as_deref(), Some(bad));
    }
}

#[test]
fn ebs_needs_a_volume_size_or_a_snapshot() {
    let r = ebs(None, None);
    assert_eq!(
        fields(&r),
        ["spec.provider.blockDeviceMappings[0].ebs.volumeSize"]
    );
    assert!(r.errors[0].message.contains("unless snapshotID"), "{r}");
    assert!(r.errors[0]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("snapshotID"));
    assert!(ebs(None, Some("snap-0123456789abcdef0")).is_valid());
    assert!(ebs(Some("40Gi"), Some("snap-0123456789abcdef0")).is_valid());
}

#[test]
fn launch_template_excludes_instance_profile_and_ami_family() {
    let r = with(|s| {
        s.provider_ref = None;
        s.provider = Some(AwsProvider {
            launch_template: Some("mine".into()),
            instance_profile: Some("KarpenterNodeInstanceProfile".into()),
            ami_family: Some("AL2".into()),
            subnet_selector: Some([("karpenter.sh/discovery".into(), "demo".into())].into()),
            ..Default::default()
        });
    });
    assert_eq!(
        fields(&r),
        ["spec.provider.amiFamily", "spec.provider.instanceProfile"]
    );
    assert!(r
        .errors
        .iter()
        .all(|e| e.message.contains("launchTemplate")));
    let alone = with(|s| {
        s.provider_ref = None;
        s.provider = Some(AwsProvider {
            launch_template: Some("mine".into()),
            subnet_selector: Some([("karpenter.sh/discovery".into(), "demo".into())].into()),
            ..Default::default()
        });
    });
    assert!(alone.is_valid(), "{alone}");
}

#[test]
fn node_template_launch_template_excludes_ami_selector() {
    use crate::api::aws::{AWSNodeTemplate, AwsNodeTemplateSpec};
    let template = |ami_selector: bool| {
        AWSNodeTemplate::new(
            "lt",
            AwsNodeTemplateSpec {
                launch_template: Some("mine".into()),
                ami_selector: ami_selector
                    .then(|| [("aws-ids".into(), "ami-0123456789abcdef0".into())].into()),
                ..Default::default()
            },
        )
    };
    let r = validate_node_template(&template(true));
    assert_eq!(fields(&r), ["spec.amiSelector"]);
    assert!(r.errors[0]
        .fix
        .as_deref()
        .unwrap_or("")
        .contains("launch template"));
    assert!(validate_node_template(&template(false)).is_valid());
}

#[test]
fn aws_ids_selector_key_is_exclusive_with_tag_keys() {
    let r = with(|s| {
        s.provider_ref = None;
        s.provider = Some(AwsProvider {
            subnet_selector: Some(
                [
                    ("aws-ids".into(), "subnet-0a1,subnet-0b2".into()),
                    ("karpenter.sh/discovery".into(), "demo".into()),
                ]
                .into(),
            ),
            security_group_selector: Some(
                [
                    ("aws-ids".into(), "sg-0a1".into()),
                    ("Name".into(), "nodes".into()),
                    ("team".into(), "ml".into()),
                ]
                .into(),
            ),
            ..Default::default()
        });
    });
    assert_eq!(
        fields(&r),
        [
            "spec.provider.subnetSelector[\"aws-ids\"]",
            "spec.provider.securityGroupSelector[\"aws-ids\"]"
        ],
        "{r}"
    );
    assert!(
        r.errors[0].message.contains("karpenter.sh/discovery"),
        "{r}"
    );
    assert!(r.errors[1].message.contains("Name, team"), "{r}");
    let ids_only = with(|s| {
        s.provider_ref = None;
        s.provider = Some(AwsProvider {
            subnet_selector: Some([("aws-ids".into(), "subnet-0a1,subnet-0b2".into())].into()),
            security_group_selector: Some([("aws-ids".into(), "sg-0a1".into())].into()),
            ..Default::default()
        });
    });
    assert!(ids_only.is_valid(), "{ids_only}");
    use crate::api::aws::{AWSNodeTemplate, AwsNodeTemplateSpec};
    let t = AWSNodeTemplate::new(
        "t",
        AwsNodeTemplateSpec {
            subnet_selector: Some(
                [
                    ("aws-ids".into(), "subnet-0a1".into()),
                    ("Name".into(), "private".into()),
                ]
                .into(),
            ),
            ..Default::default()
        },
    );
    assert_eq!(
        fields(&validate_node_template(&t)),
        ["spec.subnetSelector[\"aws-ids\"]"]
    );
}

#[test]
fn inline_provider_type_metadata_is_accepted_and_odd_values_warned() {
    let inline = |api_version: &str, kind: &str| {
        with(|s| {
            s.provider_ref = None;
            s.provider = Some(AwsProvider {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                context: Some("c-0123".into()),
                instance_profile: Some("KarpenterNodeInstanceProfile".into()),
                ..Default::default()
            });
        })
    };
    let r = inline("extensions.karpenter.sh/v1alpha1", "AWS");
    assert!(r.is_valid(), "{r}");
    let warned: Vec<&str> = r.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(warned, ["spec.provider"]);
    let r = inline("v1", "Aws");
    assert!(r.is_valid(), "{r}");
    let warned: Vec<&str> = r.warnings.iter().map(|w| w.field.as_str()).collect();
    assert_eq!(
        warned,
        [
            "spec.provider.apiVersion",
            "spec.provider.kind",
            "spec.provider"
        ]
    );
}

#[test]
fn all_errors_are_collected() {
    let r = with(|s| {
        s.weight = Some(0);
        s.ttl_seconds_after_empty = Some(-1);
        s.requirements.push(req("bad key", "Foo", &[]));
    });
    assert_eq!(r.errors.len(), 4, "{r}");
    for e in &r.errors {
        assert!(e.fix.is_some(), "every error says how to fix it: {e}");
    }
}

#[test]
fn narrow_on_demand_is_a_warning() {
    let r = with(|s| {
        s.requirements
            .push(req(labels::INSTANCE_TYPE, "In", &["m5.large"]))
    });
    assert!(r.is_valid());
    assert_eq!(r.warnings.len(), 1, "{r}");
    let r = with(|s| {
        s.requirements[0] = req(labels::CAPACITY_TYPE, "In", &["spot", "on-demand"]);
        s.requirements
            .push(req(labels::INSTANCE_TYPE, "In", &["m5.large"]));
    });
    assert!(r.warnings.is_empty(), "{r}");
}

#[test]
fn durations() {
    assert_eq!(parse_duration_secs("1m30s"), Ok(90.0));
    assert_eq!(parse_duration_secs("2h"), Ok(7200.0));
    assert_eq!(parse_duration_secs("500ms"), Ok(0.5));
    assert!(parse_duration_secs("90").is_err());
    assert!(parse_duration_secs("1d").is_err());
}

// === property tests ===

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(labels::CAPACITY_TYPE.to_string()),
        Just(labels::ARCH.to_string()),
        Just(labels::OS.to_string()),
        Just(labels::INSTANCE_TYPE.to_string()),
        Just(labels::INSTANCE_FAMILY.to_string()),
        Just(labels::INSTANCE_CATEGORY.to_string()),
        Just(labels::INSTANCE_GENERATION.to_string()),
        Just(labels::ZONE.to_string()),
        Just("beta.kubernetes.io/arch".to_string()),
        Just("example.com/team".to_string()),
        Just(" karpenter.sh/capacity-type".to_string()),
        "[a-z]{1,8}",
    ]
}

fn arb_req() -> impl Strategy<Value = Requirement> {
    (
        arb_key(),
        prop::sample::select(vec![
            "In",
            "NotIn",
            "Exists",
            "DoesNotExist",
            "Gt",
            "Lt",
            "Bad",
        ]),
        prop::collection::vec(
            prop_oneof![
                Just("on-demand".to_string()),
                Just("amd64".to_string()),
                "[a-z0-9]{1,6}"
            ],
            0..3,
        ),
    )
        .prop_map(|(key, op, values)| Requirement {
            key,
            operator: op.to_string(),
            values,
        })
}

fn arb_spec() -> impl Strategy<Value = ProvisionerSpec> {
    (
        prop::collection::vec(arb_req(), 0..6),
        prop::option::of(-2i64..100),
        prop::option::of(-1i32..102),
        any::<bool>(),
    )
        .prop_map(|(requirements, ttl, weight, has_ref)| ProvisionerSpec {
            requirements,
            ttl_seconds_after_empty: ttl,
            weight,
            provider_ref: has_ref.then(|| ProviderRef {
                name: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
}

proptest! {
    #[test]
    fn defaulting_is_idempotent(spec in arb_spec()) {
        let mut once = spec.clone();
        default_provisioner(&mut once);
        let mut twice = once.clone();
        let changes = default_provisioner(&mut twice);
        prop_assert!(changes.is_empty());
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn defaulting_never_makes_a_valid_object_invalid(spec in arb_spec()) {
        let before = Provisioner::new("p", spec.clone());
        let mut after = before.clone();
        default_provisioner(&mut after.spec);
        let (rb, ra) = (validate_provisioner(&before), validate_provisioner(&after));
        if rb.is_valid() {
            prop_assert!(ra.is_valid(), "{}", ra);
        }
        // Defaulting only adds requirements; it never removes or edits the user's.
        prop_assert_eq!(&after.spec.requirements[..spec.requirements.len()], &spec.requirements[..]);
    }

    #[test]
    fn defaulting_patch_reproduces_the_defaulted_object(spec in arb_spec()) {
        let original = Provisioner::new("p", spec);
        let mut defaulted = original.clone();
        let changes = default_provisioner(&mut defaulted.spec);
        let mut doc = serde_json::to_value(&original).unwrap_or_default();
        for c in &changes {
            apply_add(&mut doc, &c.path, c.value.clone());
        }
        prop_assert_eq!(doc, serde_json::to_value(&defaulted).unwrap_or_default());
    }

    #[test]
    fn validation_never_panics(spec in arb_spec(), name in "[ -~]{0,70}") {
        let _ = validate_provisioner(&Provisioner::new(&name, spec));
    }
}

/// A minimal RFC 6902 `add` for the two pointer shapes defaulting emits.
fn apply_add(doc: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    match path {
        "/spec/requirements" => doc["spec"]["requirements"] = value,
        "/spec/requirements/-" => {
            if let Some(a) = doc["spec"]["requirements"].as_array_mut() {
                a.push(value);
            }
        }
        other => panic!("unexpected patch path {other}"),
    }
}
