//! The AWS provider against a real EC2/SSM API: a moto server on 127.0.0.1 (see
//! `support_moto`). Covers discovery, describe calls, CreateFleet requests and tags, launch
//! templates, instance profiles looked up in IAM, listing with pagination, and termination of
//! owned instances only.

mod support_moto;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use karpenter::api::aws::AwsNodeTemplateSpec;
use karpenter::api::{AwsProvider, Provisioner, ProvisionerSpec};
use karpenter::cloud::aws::AwsCloud;
use karpenter::cloud::provider::{CloudError, CloudProvider, InstanceState, ManualClock};
use support_moto::*;

fn cloud(m: &Moto, page_size: Option<i32>) -> AwsCloud<karpenter::cloud::aws::SdkApi> {
    AwsCloud::new(m.api(page_size), config(), Arc::new(ManualClock::new()))
}

fn tagged_provider() -> AwsProvider {
    let mut tags = BTreeMap::new();
    tags.insert("team".to_string(), "platform".to_string());
    AwsProvider {
        tags,
        ..Default::default()
    }
}

fn provider_ref_provisioner(name: &str, template: &str) -> Provisioner {
    Provisioner::new(
        name,
        ProvisionerSpec {
            provider_ref: Some(karpenter::api::provisioner::ProviderRef {
                api_version: None,
                kind: None,
                name: template.into(),
            }),
            ..Default::default()
        },
    )
}

/// The decoded user data of a launch template's latest version.
async fn template_user_data(api: &karpenter::cloud::aws::SdkApi, name: &str) -> String {
    let v = api
        .ec2()
        .describe_launch_template_versions()
        .launch_template_name(name)
        .versions("$Latest")
        .send()
        .await
        .unwrap();
    let ud = v.launch_template_versions()[0]
        .launch_template_data()
        .and_then(|d| d.user_data())
        .unwrap()
        .to_string();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ud)
            .unwrap(),
    )
    .unwrap()
}

async fn launch_template_names(api: &karpenter::cloud::aws::SdkApi) -> Vec<String> {
    let mut names: Vec<String> = api
        .ec2()
        .describe_launch_templates()
        .send()
        .await
        .unwrap()
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name().map(str::to_string))
        .collect();
    names.sort();
    names
}

async fn all_instances(api: &karpenter::cloud::aws::SdkApi) -> usize {
    api.ec2()
        .describe_instances()
        .send()
        .await
        .unwrap()
        .reservations()
        .iter()
        .map(|r| r.instances().len())
        .sum()
}

#[test]
fn discovers_subnets_and_security_groups_by_tags_or_ids() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        let subnets = cloud.subnets(&AwsProvider::default()).await.unwrap();
        let mut ids: Vec<String> = subnets.iter().map(|s| s.id.clone()).collect();
        ids.sort();
        let mut want = fx.subnets.clone();
        want.sort();
        assert_eq!(ids, want, "default selector karpenter.sh/discovery=demo");
        let zones: Vec<&str> = subnets.iter().map(|s| s.zone.as_str()).collect();
        assert!(zones.contains(&"us-east-1a") && zones.contains(&"us-east-1b"));
        let by_id = AwsProvider {
            subnet_selector: Some([("aws-ids".to_string(), fx.untagged_subnet.clone())].into()),
            ..Default::default()
        };
        let got = cloud.subnets(&by_id).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, fx.untagged_subnet);
        assert_eq!(got[0].zone, "us-east-1c");
        let groups = cloud
            .security_groups(&AwsProvider::default())
            .await
            .unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].id, fx.security_group);
    });
}

#[test]
fn bad_configuration_names_the_selector_and_never_launches() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        fixture(cloud.api()).await;
        let cases: Vec<(AwsProvider, &str)> = vec![
            (
                AwsProvider {
                    subnet_selector: Some([("team".to_string(), "nobody".to_string())].into()),
                    ..Default::default()
                },
                "no subnets match subnetSelector {team=nobody}: found none of the ",
            ),
            (
                AwsProvider {
                    security_group_selector: Some(
                        [("team".to_string(), "nobody".to_string())].into(),
                    ),
                    ..Default::default()
                },
                "no security groups match securityGroupSelector {team=nobody}: found none of the ",
            ),
            (
                AwsProvider {
                    ami_family: Some("Windows2019".into()),
                    ..Default::default()
                },
                "amiFamily \"Windows2019\" is not supported: known [\"AL2\", \"Bottlerocket\", \"Ubuntu\"]",
            ),
            (
                AwsProvider {
                    instance_profile: Some("Missing".into()),
                    ..Default::default()
                },
                "spec.provider.instanceProfile \"Missing\": no IAM instance profile of that name exists",
            ),
        ];
        for (provider, message) in cases {
            let p = provisioner("default", provider);
            let err = cloud
                .create(&request(&p, "n1", &["m5.large"]))
                .await
                .unwrap_err();
            assert!(err.is_configuration(), "{err}");
            assert!(err.to_string().starts_with(message), "{err}");
        }
        // No instance profile anywhere.
        let mut c = config();
        c.default_instance_profile = None;
        let bare = AwsCloud::new(m.api(None), c, Arc::new(ManualClock::new()));
        let p = provisioner("default", AwsProvider::default());
        let err = bare
            .create(&request(&p, "n1", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CloudError::UnknownInstanceProfile { .. }),
            "{err}"
        );
        // A providerRef to an unknown AWSNodeTemplate.
        let p = provider_ref_provisioner("default", "missing");
        let err = cloud
            .create(&request(&p, "n1", &["m5.large"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "provisioner default: AWSNodeTemplate \"missing\" not found"
        );
        assert_eq!(all_instances(cloud.api()).await, 0);
        assert!(launch_template_names(cloud.api()).await.is_empty());
    });
}

#[test]
fn instance_types_come_from_describe_calls_in_subnet_zones() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        fixture(cloud.api()).await;
        let p = provisioner("default", AwsProvider::default());
        let types = cloud.instance_types(&p).await.unwrap();
        assert!(types.len() > 500, "{}", types.len());
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
        assert_eq!(m5.labels["kubernetes.io/arch"], "amd64");
        assert_eq!(m5.labels["karpenter.k8s.aws/instance-cpu"], "2");
        let zones: std::collections::BTreeSet<&str> =
            m5.offerings.iter().map(|o| o.zone.as_str()).collect();
        assert_eq!(
            zones,
            ["us-east-1a", "us-east-1b"].into(),
            "only subnet zones"
        );
        let od = m5
            .offerings
            .iter()
            .find(|o| o.capacity_type == "on-demand")
            .unwrap();
        // moto serves no Pricing API: the real GetProducts call fails and the built-in
        // price stands in.
        assert!(
            karpenter::cloud::aws::Ec2Api::on_demand_prices(cloud.api(), "us-east-1")
                .await
                .is_err()
        );
        assert_eq!(od.price, Some(0.096), "built-in on-demand price");
        let spot = m5
            .offerings
            .iter()
            .find(|o| o.capacity_type == "spot")
            .unwrap();
        assert!(
            spot.price.is_some(),
            "spot price from DescribeSpotPriceHistory"
        );
        let graviton = types.iter().find(|t| t.name == "m6g.large").unwrap();
        assert_eq!(graviton.labels["kubernetes.io/arch"], "arm64");
        // Cached: the second call answers from memory with the same result.
        assert_eq!(cloud.instance_types(&p).await.unwrap().len(), types.len());
    });
}

#[test]
fn creates_on_demand_with_tags_and_reuses_launch_templates() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        let p = provisioner("default", tagged_provider());
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.large");
        assert_eq!(i.capacity_type, "on-demand");
        assert_eq!(i.image_id, fx.ami);
        assert!(
            i.zone == "us-east-1a" || i.zone == "us-east-1b",
            "{}",
            i.zone
        );
        assert_eq!(i.tags["kubernetes.io/cluster/demo"], "owned");
        assert_eq!(i.tags["karpenter.sh/provisioner-name"], "default");
        assert_eq!(i.tags["karpenter.sh/client-token"], "node-1");
        assert_eq!(i.tags["team"], "platform");
        assert_eq!(i.tags["Name"], "karpenter/demo/default");
        assert_eq!(i.provisioner(), Some("default"));
        // One template per planned kubelet settings: m5.large boots with 29 pods, m5.xlarge
        // with 58.
        let names = launch_template_names(cloud.api()).await;
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[0].starts_with("karpenter.k8s.aws/demo/"), "{names:?}");
        // Same settings: the template is reused, also by a fresh provider (found by name).
        cloud
            .create(&request(&p, "node-2", &["m5.large"]))
            .await
            .unwrap();
        let fresh = AwsCloud::new(m.api(None), config(), Arc::new(ManualClock::new()));
        fresh
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(launch_template_names(cloud.api()).await, names);
        // Different user data (a label): another template.
        let mut r = request(&p, "node-4", &["m5.large"]);
        r.labels.insert("team".into(), "a".into());
        cloud.create(&r).await.unwrap();
        assert_eq!(launch_template_names(cloud.api()).await.len(), 3);
        let mut max_pods = Vec::new();
        for name in &names {
            let ud = template_user_data(cloud.api(), name).await;
            assert!(ud.contains("--use-max-pods false"), "{ud}");
            assert!(
                ud.contains("karpenter.sh/capacity-type=on-demand"),
                "the launched capacity type is a kubelet label: {ud}"
            );
            max_pods.push(
                ["--max-pods=29 ", "--max-pods=58 "]
                    .into_iter()
                    .find(|f| ud.contains(f))
                    .unwrap_or_else(|| panic!("no planned --max-pods in {ud}")),
            );
        }
        max_pods.sort();
        assert_eq!(max_pods, ["--max-pods=29 ", "--max-pods=58 "]);
        let names: Vec<String> = {
            let mut n = Vec::new();
            for name in &names {
                if template_user_data(cloud.api(), name)
                    .await
                    .contains("--max-pods=29 ")
                {
                    n.push(name.clone());
                }
            }
            n
        };
        // The template carries the AMI, instance profile, security groups and user data.
        let v = cloud
            .api()
            .ec2()
            .describe_launch_template_versions()
            .launch_template_name(&names[0])
            .versions("$Latest")
            .send()
            .await
            .unwrap();
        let data = v.launch_template_versions()[0]
            .launch_template_data()
            .unwrap();
        assert_eq!(data.image_id(), Some(fx.ami.as_str()));
        assert_eq!(
            data.iam_instance_profile().and_then(|p| p.name()),
            Some("KarpenterNodeInstanceProfile")
        );
        assert_eq!(
            data.security_group_ids(),
            std::slice::from_ref(&fx.security_group)
        );
        let user_data = base64::engine::general_purpose::STANDARD
            .decode(data.user_data().unwrap())
            .unwrap();
        let user_data = String::from_utf8(user_data).unwrap();
        assert!(
            user_data.contains(
                "/etc/eks/bootstrap.sh 'demo' --apiserver-endpoint 'https://demo.example.com'"
            ),
            "{user_data}"
        );
        assert!(
            user_data.contains(
                "--node-labels=karpenter.sh/capacity-type=on-demand,karpenter.sh/provisioner-name=default "
            ),
            "{user_data}"
        );
        // Defaults: IMDSv2 required with hop limit 2, an encrypted gp3 root volume of 20 GiB.
        let imds = data.metadata_options().unwrap();
        assert_eq!(imds.http_tokens().map(|t| t.as_str()), Some("required"));
        assert_eq!(imds.http_put_response_hop_limit(), Some(2));
        let root = &data.block_device_mappings()[0];
        assert_eq!(root.device_name(), Some("/dev/xvda"));
        let ebs = root.ebs().unwrap();
        assert_eq!(ebs.volume_size(), Some(20));
        assert_eq!(ebs.encrypted(), Some(true));
        assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
        // Instances carry the managed-by tag.
        assert_eq!(i.tags["karpenter.sh/managed-by"], "demo");
    });
}

#[test]
fn creates_spot_and_respects_zones() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        fixture(cloud.api()).await;
        let p = provisioner("default", AwsProvider::default());
        let mut r = request(&p, "spot-1", &["m5.large"]);
        r.capacity_types.insert("spot".into());
        r.zones.insert("us-east-1b".into());
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.capacity_type, "spot");
        assert_eq!(i.zone, "us-east-1b");
        assert_eq!(
            cloud.get(&i.id).await.unwrap().unwrap().capacity_type,
            "spot"
        );
    });
}

#[test]
fn bottlerocket_template_carries_toml_settings() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        cloud.set_node_template(
            "br",
            AwsNodeTemplateSpec {
                ami_family: Some("Bottlerocket".into()),
                ..Default::default()
            },
        );
        let p = provider_ref_provisioner("br", "br");
        let mut r = request(&p, "br-1", &["m6g.large"]);
        r.taints.push(karpenter::api::Taint {
            key: "dedicated".into(),
            value: Some("br".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.instance_type, "m6g.large");
        assert_eq!(i.image_id, fx.ami_arm64, "the arm64 AMI parameter");
        let names = launch_template_names(cloud.api()).await;
        let v = cloud
            .api()
            .ec2()
            .describe_launch_template_versions()
            .launch_template_name(&names[0])
            .send()
            .await
            .unwrap();
        let ud = v.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.user_data())
            .unwrap()
            .to_string();
        let ud = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(ud)
                .unwrap(),
        )
        .unwrap();
        assert!(ud.contains("cluster-name = \"demo\""), "{ud}");
        assert!(ud.contains("\"dedicated\" = [\"br:NoSchedule\"]"), "{ud}");
        // The planned pod density and reservations reach Bottlerocket's kubelet.
        assert!(ud.contains("max-pods = 29\n"), "{ud}");
        assert!(ud.contains("[settings.kubernetes.kube-reserved]"), "{ud}");
        assert!(ud.contains("\"memory.available\" = \"100Mi\""), "{ud}");
    });
}

/// Points an SSM AMI parameter (under the test prefix) at the third AMI moto has.
async fn third_ami_at(api: &karpenter::cloud::aws::SdkApi, parameter: &str) -> String {
    let images = api
        .ec2()
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap();
    let ami = images.images()[2].image_id().unwrap().to_string();
    api.ssm()
        .put_parameter()
        .name(format!("{SSM_PREFIX}/{parameter}"))
        .value(&ami)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    ami
}

#[test]
fn gpu_types_boot_the_gpu_ami_of_their_family() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        let gpu = third_ami_at(
            cloud.api(),
            "eks/optimized-ami/1.27/amazon-linux-2-gpu/recommended/image_id",
        )
        .await;
        assert_ne!(gpu, fx.ami);
        let p = provisioner("default", AwsProvider::default());
        let i = cloud
            .create(&request(&p, "gpu-1", &["g4dn.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "g4dn.xlarge");
        assert_eq!(i.image_id, gpu, "AL2's GPU AMI for an NVIDIA type");
        let i = cloud
            .create(&request(&p, "cpu-1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(i.image_id, fx.ami, "the standard AMI otherwise");
        // Bottlerocket's -nvidia variant.
        let br_gpu = third_ami_at(
            cloud.api(),
            "bottlerocket/aws-k8s-1.27-nvidia/x86_64/latest/image_id",
        )
        .await;
        cloud.set_node_template(
            "br",
            AwsNodeTemplateSpec {
                ami_family: Some("Bottlerocket".into()),
                ..Default::default()
            },
        );
        let p = provider_ref_provisioner("br", "br");
        let i = cloud
            .create(&request(&p, "br-gpu-1", &["g4dn.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.image_id, br_gpu);
    });
}

#[test]
fn lists_and_gets_only_owned_instances_across_pages() {
    let m = moto();
    let cloud = cloud(&m, Some(5));
    block_on(async {
        let fx = fixture(cloud.api()).await;
        let p = provisioner("default", AwsProvider::default());
        let mut ids = Vec::new();
        for n in 0..7 {
            let i = cloud
                .create(&request(&p, &format!("node-{n}"), &["m5.large"]))
                .await
                .unwrap();
            ids.push(i.id);
        }
        // Someone else's instance in the same subnet.
        let foreign = cloud
            .api()
            .ec2()
            .run_instances()
            .image_id(&fx.ami)
            .min_count(1)
            .max_count(1)
            .subnet_id(&fx.subnets[0])
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_string();
        let listed: Vec<String> = cloud
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        ids.sort();
        assert_eq!(
            listed, ids,
            "7 owned instances over pages of 5, foreign excluded"
        );
        assert_eq!(cloud.get(&foreign).await.unwrap(), None);
        assert_eq!(cloud.get("i-0000000000000dead").await.unwrap(), None);
        let got = cloud.get(&ids[0]).await.unwrap().unwrap();
        assert_eq!(got.id, ids[0]);
    });
}

#[test]
fn terminates_owned_instances_and_refuses_untagged() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        let p = provisioner("default", AwsProvider::default());
        let ours = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        let foreign = cloud
            .api()
            .ec2()
            .run_instances()
            .image_id(&fx.ami)
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_string();
        let err = cloud.delete(&foreign).await.unwrap_err();
        assert!(matches!(err, CloudError::NotOwned { .. }), "{err}");
        let state = cloud
            .api()
            .ec2()
            .describe_instances()
            .instance_ids(&foreign)
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string());
        assert_eq!(
            state.as_deref(),
            Some("running"),
            "untagged instance untouched"
        );
        cloud.delete(&ours.id).await.unwrap();
        let after = cloud.get(&ours.id).await.unwrap().unwrap();
        assert!(after.state.is_terminating(), "{:?}", after.state);
        // Already terminated, and unknown IDs: success.
        cloud.delete(&ours.id).await.unwrap();
        cloud.delete("i-0000000000000dead").await.unwrap();
        assert!(cloud.list().await.unwrap().is_empty());
        assert_ne!(after.state, InstanceState::Running);
    });
}

#[test]
fn a_node_group_instance_with_only_the_cluster_tag_is_never_listed_or_terminated() {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        let p = provisioner("default", AwsProvider::default());
        let ours = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(ours.tags["karpenter.sh/managed-by"], CLUSTER);
        // What an EKS managed node group launches: the cluster tag, no provisioner tag.
        let node_group = cloud
            .api()
            .ec2()
            .run_instances()
            .image_id(&fx.ami)
            .min_count(1)
            .max_count(1)
            .subnet_id(&fx.subnets[0])
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(
                        Tag::builder()
                            .key(format!("kubernetes.io/cluster/{CLUSTER}"))
                            .value("owned")
                            .build(),
                    )
                    .tags(
                        Tag::builder()
                            .key("eks:nodegroup-name")
                            .value("system")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .instances()[0]
            .instance_id()
            .unwrap()
            .to_string();
        let listed: Vec<String> = cloud
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(listed, std::slice::from_ref(&ours.id));
        assert_eq!(cloud.get(&node_group).await.unwrap(), None);
        let err = cloud.delete(&node_group).await.unwrap_err();
        assert!(matches!(err, CloudError::NotOwned { .. }), "{err}");
        let state = cloud
            .api()
            .ec2()
            .describe_instances()
            .instance_ids(&node_group)
            .send()
            .await
            .unwrap()
            .reservations()[0]
            .instances()[0]
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string());
        assert_eq!(state.as_deref(), Some("running"), "node group untouched");
    });
}

#[test]
fn uses_the_users_launch_template_when_named() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let fx = fixture(cloud.api()).await;
        cloud
            .api()
            .ec2()
            .create_launch_template()
            .launch_template_name("my-nodes")
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(&fx.ami_arm64)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let p = provisioner(
            "custom",
            AwsProvider {
                launch_template: Some("my-nodes".into()),
                ..Default::default()
            },
        );
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(i.image_id, fx.ami_arm64, "the user's template's AMI");
        assert_eq!(launch_template_names(cloud.api()).await, ["my-nodes"]);
    });
}

#[test]
fn describe_instance_types_maps_like_the_builtin_catalog() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        let infos = cloud.instance_type_infos().await.unwrap();
        let builtin = karpenter::cloud::catalog::builtin_us_east_1().unwrap();
        for name in [
            "m5.large",
            "m6g.large",
            "g4dn.xlarge",
            "p3dn.24xlarge",
            "inf2.xlarge",
            "m5.metal",
            "c6gn.2xlarge",
            "i3.large",
        ] {
            let got = infos.iter().find(|i| i.name == name).unwrap();
            let want = builtin.iter().find(|i| i.name == name).unwrap();
            assert_eq!(got, want, "{name}");
        }
    });
}

fn profile_provider(name: &str) -> AwsProvider {
    AwsProvider {
        instance_profile: Some(name.into()),
        ..Default::default()
    }
}

#[test]
fn unknown_instance_profile_is_a_configuration_error_and_nothing_launches() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        fixture(cloud.api()).await;
        // Inline provider.
        let p = provisioner("default", profile_provider("NoSuchProfile"));
        let err = cloud
            .create(&request(&p, "n1", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        assert!(
            matches!(err, CloudError::InvalidInstanceProfile { .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "spec.provider.instanceProfile \"NoSuchProfile\": no IAM instance profile of that \
             name exists (GetInstanceProfile: NoSuchEntity); create it or fix the name"
        );
        // An AWSNodeTemplate names itself.
        cloud.set_node_template(
            "nodes",
            AwsNodeTemplateSpec {
                instance_profile: Some("AlsoMissing".into()),
                ..Default::default()
            },
        );
        let err = cloud
            .create(&request(
                &provider_ref_provisioner("ref", "nodes"),
                "n2",
                &["m5.large"],
            ))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        assert!(
            err.to_string().starts_with(
                "AWSNodeTemplate \"nodes\" spec.instanceProfile \"AlsoMissing\": no IAM instance profile"
            ),
            "{err}"
        );
        // The controller's default profile, when the provisioner sets none.
        let mut c = config();
        c.default_instance_profile = Some("DefaultMissing".into());
        let other = AwsCloud::new(m.api(None), c, Arc::new(ManualClock::new()));
        let err = other
            .create(&request(
                &provisioner("default", AwsProvider::default()),
                "n3",
                &["m5.large"],
            ))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        assert!(
            err.to_string().starts_with("defaultInstanceProfile")
                && err
                    .to_string()
                    .contains("\"DefaultMissing\": no IAM instance profile"),
            "{err}"
        );
        assert_eq!(all_instances(cloud.api()).await, 0, "nothing launched");
        assert!(launch_template_names(cloud.api()).await.is_empty());
        // A miss is not cached: once the profile exists, the same provisioner launches.
        instance_profile(cloud.api(), "NoSuchProfile", Some("NoSuchProfileRole")).await;
        let i = cloud
            .create(&request(&p, "n1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(all_instances(cloud.api()).await, 1);
        assert_eq!(cloud.get(&i.id).await.unwrap().unwrap().id, i.id);
    });
}

#[test]
fn instance_profile_without_a_role_is_a_configuration_error() {
    let m = moto();
    let cloud = cloud(&m, None);
    block_on(async {
        fixture(cloud.api()).await;
        instance_profile(cloud.api(), "NoRole", None).await;
        let p = provisioner("default", profile_provider("NoRole"));
        let err = cloud
            .create(&request(&p, "n1", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(
                "spec.provider.instanceProfile \"NoRole\": IAM instance profile arn:aws:iam::"
            ),
            "{text}"
        );
        assert!(
            text.contains("has no role attached, so its instances would have no credentials"),
            "{text}"
        );
        assert_eq!(all_instances(cloud.api()).await, 0, "nothing launched");
        assert!(launch_template_names(cloud.api()).await.is_empty());
    });
}

#[test]
fn a_found_instance_profile_is_cached_for_the_cache_ttl() {
    let m = moto();
    let clock = Arc::new(ManualClock::new());
    let cloud = AwsCloud::new(m.api(None), config(), clock.clone());
    block_on(async {
        fixture(cloud.api()).await;
        let p = provisioner("default", AwsProvider::default());
        cloud
            .create(&request(&p, "n1", &["m5.large"]))
            .await
            .unwrap();
        // Deleted from IAM: still cached, so the next launch does not look it up.
        let iam = cloud.api().iam();
        iam.remove_role_from_instance_profile()
            .instance_profile_name(INSTANCE_PROFILE)
            .role_name(NODE_ROLE)
            .send()
            .await
            .unwrap();
        iam.delete_instance_profile()
            .instance_profile_name(INSTANCE_PROFILE)
            .send()
            .await
            .unwrap();
        cloud
            .create(&request(&p, "n2", &["m5.large"]))
            .await
            .unwrap();
        // After the TTL it is looked up again and found missing.
        clock.advance(std::time::Duration::from_secs(301));
        let err = cloud
            .create(&request(&p, "n3", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CloudError::InvalidInstanceProfile { .. }),
            "{err}"
        );
        assert_eq!(all_instances(cloud.api()).await, 2);
    });
}
