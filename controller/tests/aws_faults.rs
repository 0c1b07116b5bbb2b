//! The AWS provider with faults moto never produces, injected by a wrapper around the real
//! SDK-backed API (still talking to a moto server on 127.0.0.1): insufficient capacity per
//! instance type, throttling, and a lost CreateFleet response. Time is a manual clock: no test
//! sleeps.

mod support_moto;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use karpenter::api::AwsProvider;
use karpenter::cloud::aws::api::{
    Filter, FleetError, FleetRequest, FleetResponse, Image, InstanceProfileInfo,
    LaunchTemplateInfo, LaunchTemplateSpec, SecurityGroup, SpotPrice, Subnet,
};
use karpenter::cloud::aws::{ApiError, AwsCloud, Ec2Api, SdkApi};
use karpenter::cloud::catalog::AwsInstanceTypeInfo;
use karpenter::cloud::provider::{CloudError, CloudProvider, Instance, ManualClock};
use support_moto::*;

/// One DescribeImages call: filters, owners, image IDs.
type ImageQuery = (Vec<Filter>, Vec<String>, Vec<String>);

/// Wraps the SDK API and injects faults into CreateFleet and DescribeSubnets.
struct FaultyApi {
    inner: SdkApi,
    /// Instance types that answer InsufficientInstanceCapacity in every zone.
    out_of_capacity: Mutex<BTreeSet<String>>,
    /// The next N calls of CreateFleet and DescribeSubnets answer RequestLimitExceeded.
    throttle: AtomicU32,
    /// The next N CreateFleet calls launch, then lose the response (connection reset).
    lose_response: AtomicU32,
    /// An error code CreateFleet answers with, once.
    fail_with: Mutex<Option<ApiError>>,
    /// A per-override error CreateFleet answers with (launching nothing), once.
    fleet_error: Mutex<Option<FleetError>>,
    /// Every CreateFleet request that reached the wrapper.
    fleets: Mutex<Vec<FleetRequest>>,
    /// How many CreateFleet calls reached moto.
    launched_calls: AtomicU32,
    /// Per capacity type: an error code every override of that capacity type answers with
    /// (only overrides of the given instance type when one is set; the error then names it).
    refuse: Mutex<HashMap<String, (String, Option<String>)>>,
    /// Spot prices DescribeSpotPriceHistory answers with instead of moto's.
    spot_prices: Mutex<Option<Vec<SpotPrice>>>,
    /// Every launch template is answered as missing (deleted again as soon as it is created).
    templates_vanish: AtomicBool,
    /// What EC2 remembers per client token: the request (its token blanked) and the answer.
    tokens: Mutex<HashMap<String, (FleetRequest, FleetResponse)>>,
    /// Every launch template created, by name.
    templates: Mutex<HashMap<String, LaunchTemplateSpec>>,
    /// Images DescribeImages answers with instead of moto's (and the queries it got).
    images: Mutex<Option<Vec<Image>>>,
    image_queries: Mutex<Vec<ImageQuery>>,
    /// IDs of the launch templates deleted.
    deleted_templates: Mutex<Vec<String>>,
    /// DescribeSubnets and DescribeSecurityGroups calls that reached the wrapper.
    discovery_calls: AtomicU32,
    /// What the Pricing API answers (by default what the SDK implementation does: no client).
    prices: Mutex<Option<Result<HashMap<String, f64>, ApiError>>>,
    /// The regions prices were asked for.
    pricing_regions: Mutex<Vec<String>>,
}

impl FaultyApi {
    fn new(inner: SdkApi) -> Self {
        Self {
            inner,
            out_of_capacity: Mutex::default(),
            throttle: AtomicU32::new(0),
            lose_response: AtomicU32::new(0),
            fail_with: Mutex::default(),
            fleet_error: Mutex::default(),
            fleets: Mutex::default(),
            launched_calls: AtomicU32::new(0),
            tokens: Mutex::default(),
            refuse: Mutex::default(),
            spot_prices: Mutex::default(),
            templates_vanish: AtomicBool::new(false),
            templates: Mutex::default(),
            images: Mutex::default(),
            image_queries: Mutex::default(),
            deleted_templates: Mutex::default(),
            discovery_calls: AtomicU32::new(0),
            prices: Mutex::default(),
            pricing_regions: Mutex::default(),
        }
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// One CreateFleet as EC2 answers a new client token, with the injected faults.
    async fn create_fleet_once(&self, request: &FleetRequest) -> Result<FleetResponse, ApiError> {
        if let Some(e) = self.fail_with.lock().unwrap().take() {
            return Err(e);
        }
        // EC2 refuses the whole call when a named launch template does not exist.
        for c in &request.configs {
            let found = self
                .inner
                .find_launch_template(&c.launch_template_name)
                .await?;
            if found.is_none() || self.templates_vanish.load(Ordering::SeqCst) {
                return Err(ApiError::new(
                    "InvalidLaunchTemplateName.NotFoundException",
                    &format!(
                        "The specified launch template, with template name {}, does not exist.",
                        c.launch_template_name
                    ),
                ));
            }
        }
        if let Some(e) = self.fleet_error.lock().unwrap().take() {
            return Ok(FleetResponse {
                instances: vec![],
                errors: vec![e],
            });
        }
        let out = self.out_of_capacity.lock().unwrap().clone();
        let refused = self
            .refuse
            .lock()
            .unwrap()
            .get(&request.capacity_type)
            .cloned();
        let mut errors = Vec::new();
        let mut passed = request.clone();
        for c in &mut passed.configs {
            c.overrides.retain(|o| {
                if let Some((code, only)) = &refused {
                    if only.as_ref().is_none_or(|t| t == &o.instance_type) {
                        errors.push(FleetError {
                            instance_type: only.clone(),
                            subnet_id: only.as_ref().map(|_| o.subnet_id.clone()),
                            code: code.clone(),
                            message: format!("{code} for {}", request.capacity_type),
                        });
                        return false;
                    }
                }
                let ice = out.contains(&o.instance_type);
                if ice {
                    errors.push(FleetError {
                        instance_type: Some(o.instance_type.clone()),
                        subnet_id: Some(o.subnet_id.clone()),
                        code: "InsufficientInstanceCapacity".into(),
                        message: format!(
                            "We currently do not have sufficient {} capacity",
                            o.instance_type
                        ),
                    });
                }
                !ice
            });
        }
        passed.configs.retain(|c| !c.overrides.is_empty());
        if passed.configs.is_empty() {
            return Ok(FleetResponse {
                instances: vec![],
                errors,
            });
        }
        self.launched_calls.fetch_add(1, Ordering::SeqCst);
        let mut response = self.inner.create_fleet(&passed).await?;
        response.errors.extend(errors);
        Ok(response)
    }

    fn throttled() -> ApiError {
        ApiError::new("RequestLimitExceeded", "Request limit exceeded.")
    }
}

impl Ec2Api for FaultyApi {
    async fn describe_subnets(&self, filters: Vec<Filter>) -> Result<Vec<Subnet>, ApiError> {
        self.discovery_calls.fetch_add(1, Ordering::SeqCst);
        if Self::take(&self.throttle) {
            return Err(Self::throttled());
        }
        self.inner.describe_subnets(filters).await
    }

    async fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<SecurityGroup>, ApiError> {
        self.discovery_calls.fetch_add(1, Ordering::SeqCst);
        self.inner.describe_security_groups(filters).await
    }

    async fn describe_instance_types(&self) -> Result<Vec<AwsInstanceTypeInfo>, ApiError> {
        self.inner.describe_instance_types().await
    }

    async fn describe_instance_type_offerings(&self) -> Result<Vec<(String, String)>, ApiError> {
        self.inner.describe_instance_type_offerings().await
    }

    async fn describe_spot_price_history(&self) -> Result<Vec<SpotPrice>, ApiError> {
        if let Some(p) = self.spot_prices.lock().unwrap().clone() {
            return Ok(p);
        }
        self.inner.describe_spot_price_history().await
    }

    async fn describe_images(
        &self,
        filters: Vec<Filter>,
        owners: Vec<String>,
        image_ids: Vec<String>,
    ) -> Result<Vec<Image>, ApiError> {
        self.image_queries.lock().unwrap().push((
            filters.clone(),
            owners.clone(),
            image_ids.clone(),
        ));
        if let Some(i) = self.images.lock().unwrap().clone() {
            return Ok(i);
        }
        self.inner.describe_images(filters, owners, image_ids).await
    }

    async fn on_demand_prices(&self, region: &str) -> Result<HashMap<String, f64>, ApiError> {
        self.pricing_regions
            .lock()
            .unwrap()
            .push(region.to_string());
        if let Some(answer) = self.prices.lock().unwrap().clone() {
            return answer;
        }
        self.inner.on_demand_prices(region).await
    }

    async fn get_parameter(&self, name: &str) -> Result<String, ApiError> {
        self.inner.get_parameter(name).await
    }

    async fn instance_profile(&self, name: &str) -> Result<Option<InstanceProfileInfo>, ApiError> {
        self.inner.instance_profile(name).await
    }

    async fn find_launch_template(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.inner.find_launch_template(name).await
    }

    async fn describe_launch_templates(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<LaunchTemplateInfo>, ApiError> {
        self.inner.describe_launch_templates(filters).await
    }

    async fn delete_launch_template(&self, id: &str) -> Result<(), ApiError> {
        self.deleted_templates.lock().unwrap().push(id.to_string());
        self.inner.delete_launch_template(id).await
    }

    async fn create_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, ApiError> {
        self.templates
            .lock()
            .unwrap()
            .insert(spec.name.clone(), spec.clone());
        self.inner.create_launch_template(spec).await
    }

    async fn create_fleet(&self, request: &FleetRequest) -> Result<FleetResponse, ApiError> {
        self.fleets.lock().unwrap().push(request.clone());
        if Self::take(&self.throttle) {
            return Err(Self::throttled());
        }
        // EC2's client-token idempotency: the same token with the same parameters replays the
        // first answer; with other parameters it is refused.
        let params = FleetRequest {
            client_token: String::new(),
            ..request.clone()
        };
        if let Some((first, answer)) = self.tokens.lock().unwrap().get(&request.client_token) {
            if first != &params {
                return Err(ApiError::new(
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that is already deleted or has different parameters.",
                ));
            }
            return Ok(answer.clone());
        }
        let answer = self.create_fleet_once(request).await;
        if let Ok(a) = &answer {
            self.tokens
                .lock()
                .unwrap()
                .insert(request.client_token.clone(), (params, a.clone()));
        }
        if Self::take(&self.lose_response) {
            return Err(ApiError::new("", "connection reset by peer"));
        }
        answer
    }
    async fn describe_instances(
        &self,
        filters: Vec<Filter>,
        instance_ids: Vec<String>,
    ) -> Result<Vec<Instance>, ApiError> {
        self.inner.describe_instances(filters, instance_ids).await
    }

    async fn terminate_instances(&self, instance_ids: Vec<String>) -> Result<(), ApiError> {
        self.inner.terminate_instances(instance_ids).await
    }
}

/// [`cloud`], for tests whose `cloud` variable shadows it (a second provider: a restart).
fn cloud_with_clock(m: &Moto) -> (Arc<ManualClock>, AwsCloud<FaultyApi>) {
    cloud(m)
}

fn cloud(m: &Moto) -> (Arc<ManualClock>, AwsCloud<FaultyApi>) {
    let clock = Arc::new(ManualClock::new());
    let cloud = AwsCloud::new(FaultyApi::new(m.api(None)), config(), clock.clone());
    (clock, cloud)
}

/// Whether every on-demand offering of a type in a list is available.
fn on_demand_available(types: &[karpenter::scheduling::InstanceType], name: &str) -> bool {
    types.iter().find(|t| t.name == name).is_some_and(|t| {
        t.offerings
            .iter()
            .filter(|o| o.capacity_type == "on-demand")
            .all(|o| o.available)
    })
}

#[test]
fn an_unchanged_catalog_is_handed_out_again_and_rebuilt_when_an_input_changes() {
    let m = moto();
    let (clock, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        let first = cloud.instance_types(&p).await.unwrap();
        let again = cloud.instance_types(&p).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "nothing changed: the same list"
        );
        // A capacity error: a new list, with the offering unavailable.
        cloud
            .unavailable()
            .mark("m5.large", "us-east-1a", "on-demand");
        let marked = cloud.instance_types(&p).await.unwrap();
        assert!(!Arc::ptr_eq(&first, &marked));
        assert!(!on_demand_available(&marked, "m5.large"));
        assert!(on_demand_available(&first, "m5.large"));
        // The mark expires after three minutes: available again.
        clock.advance(Duration::from_secs(181));
        let expired = cloud.instance_types(&p).await.unwrap();
        assert!(!Arc::ptr_eq(&marked, &expired));
        assert!(on_demand_available(&expired, "m5.large"));
        // The instance-type cache expires after five minutes: rebuilt from the new answer.
        clock.advance(Duration::from_secs(120));
        let refreshed = cloud.instance_types(&p).await.unwrap();
        assert!(!Arc::ptr_eq(&expired, &refreshed));
        assert_eq!(
            refreshed.iter().map(|t| &t.name).collect::<Vec<_>>(),
            expired.iter().map(|t| &t.name).collect::<Vec<_>>()
        );
    });
}

#[test]
fn insufficient_capacity_falls_back_and_marks_the_offering_for_three_minutes() {
    let m = moto();
    let (clock, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        cloud
            .api()
            .out_of_capacity
            .lock()
            .unwrap()
            .insert("m5.large".into());
        let p = provisioner("default", AwsProvider::default());
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.xlarge");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(fleets.len(), 1, "m5.xlarge launched in the same call");
        // Both zones of m5.large are now unavailable for on-demand, and the packer sees it.
        for zone in ["us-east-1a", "us-east-1b"] {
            assert!(cloud
                .unavailable()
                .is_unavailable("m5.large", zone, "on-demand"));
            assert!(!cloud.unavailable().is_unavailable("m5.large", zone, "spot"));
        }
        let types = cloud.instance_types(&p).await.unwrap();
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
        assert!(m5
            .offerings
            .iter()
            .filter(|o| o.capacity_type == "on-demand")
            .all(|o| !o.available));
        // The next launch does not even offer m5.large.
        cloud
            .create(&request(&p, "node-2", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let types: BTreeSet<&str> = fleets[1].configs[0]
            .overrides
            .iter()
            .map(|o| o.instance_type.as_str())
            .collect();
        assert_eq!(types, ["m5.xlarge"].into());
        // Three minutes later it is offered again.
        clock.advance(Duration::from_secs(181));
        cloud.api().out_of_capacity.lock().unwrap().clear();
        let i = cloud
            .create(&request(&p, "node-3", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.large");
    });
}

#[test]
fn insufficient_capacity_everywhere_is_an_error_and_launches_nothing() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        {
            let mut out = cloud.api().out_of_capacity.lock().unwrap();
            out.insert("m5.large".into());
            out.insert("c5.large".into());
        }
        let p = provisioner("default", AwsProvider::default());
        let err = cloud
            .create(&request(&p, "node-1", &["c5.large", "m5.large"]))
            .await
            .unwrap_err();
        match &err {
            CloudError::InsufficientCapacity {
                instance_types,
                detail,
            } => {
                assert_eq!(instance_types, &["c5.large", "m5.large"]);
                assert!(detail.contains("InsufficientInstanceCapacity"), "{detail}");
            }
            other => panic!("unexpected {other}"),
        }
        assert_eq!(cloud.api().launched_calls.load(Ordering::SeqCst), 0);
        assert!(cloud.list().await.unwrap().is_empty());
        // Everything is marked: the next attempt fails fast without calling CreateFleet.
        let calls = cloud.api().fleets.lock().unwrap().len();
        let err = cloud
            .create(&request(&p, "node-2", &["c5.large", "m5.large"]))
            .await
            .unwrap_err();
        assert!(matches!(err, CloudError::NoOfferings(_)), "{err}");
        assert_eq!(cloud.api().fleets.lock().unwrap().len(), calls);
    });
}

#[test]
fn spot_falls_back_to_on_demand_when_spot_is_out_of_capacity() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        // Spot capacity error for m5.large (spot requests only: the wrapper sees capacity type).
        for zone in ["us-east-1a", "us-east-1b"] {
            cloud.unavailable().mark("m5.large", zone, "spot");
        }
        let mut r = request(&p, "node-1", &["m5.large"]);
        r.capacity_types.insert("spot".into());
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.capacity_type, "on-demand");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(fleets[0].capacity_type, "on-demand");
    });
}

#[test]
fn a_spot_quota_error_falls_back_to_on_demand_and_marks_every_spot_offering() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        cloud
            .api()
            .refuse
            .lock()
            .unwrap()
            .insert("spot".into(), ("MaxSpotInstanceCountExceeded".into(), None));
        let p = provisioner("default", AwsProvider::default());
        let mut r = request(&p, "node-1", &["m5.large", "m5.xlarge"]);
        r.capacity_types.insert("spot".into());
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.capacity_type, "on-demand");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let cts: Vec<&str> = fleets.iter().map(|f| f.capacity_type.as_str()).collect();
        assert_eq!(cts, ["spot", "on-demand"]);
        for t in ["m5.large", "m5.xlarge"] {
            for zone in ["us-east-1a", "us-east-1b"] {
                assert!(cloud.unavailable().is_unavailable(t, zone, "spot"));
                assert!(!cloud.unavailable().is_unavailable(t, zone, "on-demand"));
            }
        }
    });
}

/// The decoded user data of the launch template a fleet config names.
fn user_data_of(cloud: &AwsCloud<FaultyApi>, template: &str) -> String {
    use base64::Engine;
    let spec = cloud.api().templates.lock().unwrap()[template].clone();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(spec.user_data)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn the_capacity_type_label_is_the_one_launched_after_a_spot_fallback() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        cloud
            .api()
            .refuse
            .lock()
            .unwrap()
            .insert("spot".into(), ("MaxSpotInstanceCountExceeded".into(), None));
        let p = provisioner("default", AwsProvider::default());
        let mut r = request(&p, "node-1", &["m5.large"]);
        r.capacity_types.insert("spot".into());
        // A label the request carries for the capacity type is replaced by the launched one.
        r.labels
            .insert("karpenter.sh/capacity-type".into(), "spot".into());
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.capacity_type, "on-demand");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(fleets.len(), 2);
        let spot = user_data_of(&cloud, &fleets[0].configs[0].launch_template_name);
        let on_demand = user_data_of(&cloud, &fleets[1].configs[0].launch_template_name);
        assert!(spot.contains("karpenter.sh/capacity-type=spot"), "{spot}");
        assert!(
            on_demand.contains("karpenter.sh/capacity-type=on-demand"),
            "{on_demand}"
        );
        assert!(!on_demand.contains("capacity-type=spot"), "{on_demand}");
        // The planned max pods of m5.large with the kubelet told not to pick its own.
        assert!(on_demand.contains("--max-pods=29 "), "{on_demand}");
        assert!(on_demand.contains("--use-max-pods false"), "{on_demand}");
    });
}

#[test]
fn labels_the_kubelet_refuses_are_left_to_the_node_object() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        cloud
            .api()
            .refuse
            .lock()
            .unwrap()
            .insert("spot".into(), ("MaxSpotInstanceCountExceeded".into(), None));
        let mut p = provisioner("default", AwsProvider::default());
        p.spec.labels = [
            ("node-restriction.kubernetes.io/team", "a"),
            ("node-role.kubernetes.io/worker", ""),
            ("team", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut r = request(&p, "node-1", &["m5.large"]);
        r.labels.extend(p.spec.labels.clone());
        r.capacity_types.insert("spot".into());
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.capacity_type, "on-demand");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let ud = user_data_of(&cloud, &fleets[1].configs[0].launch_template_name);
        assert!(ud.contains("team=a"), "{ud}");
        assert!(!ud.contains("node-restriction.kubernetes.io"), "{ud}");
        assert!(!ud.contains("node-role.kubernetes.io"), "{ud}");
        // The controller's Node object carries them, and the launched capacity type.
        let node =
            karpenter::lifecycle::provisioning::node_for_instance(&i, &p, None, String::new());
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["node-restriction.kubernetes.io/team"], "a");
        assert_eq!(labels["node-role.kubernetes.io/worker"], "");
        assert_eq!(labels["karpenter.sh/capacity-type"], "on-demand");
    });
}

#[test]
fn kubelet_configuration_reaches_the_launch_template() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let mut p = provisioner("default", AwsProvider::default());
        p.spec.kubelet_configuration = Some(karpenter::api::provisioner::KubeletConfiguration {
            max_pods: Some(110),
            cluster_dns: vec!["10.100.0.10".into()],
            kube_reserved: [("cpu".to_string(), karpenter::api::Quantity::from("300m"))].into(),
            ..Default::default()
        });
        cloud
            .create(&request(&p, "node-1", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        // Both types boot with 110 pods and the same reservations except memory (which
        // follows pods, equal here) and cpu (given): one template.
        assert_eq!(fleets[0].configs.len(), 1, "{:?}", fleets[0].configs);
        let ud = user_data_of(&cloud, &fleets[0].configs[0].launch_template_name);
        for want in [
            "--max-pods=110 ",
            "--dns-cluster-ip '10.100.0.10'",
            "--kube-reserved=cpu=300m,ephemeral-storage=1Gi,memory=1465Mi",
        ] {
            assert!(ud.contains(want), "{want} missing from {ud}");
        }
    });
}

/// A provisioner referencing the AWSNodeTemplate `tpl`, and that template's spec.
fn node_template_provisioner(
    spec: karpenter::api::AwsNodeTemplateSpec,
) -> (
    karpenter::api::Provisioner,
    karpenter::api::AwsNodeTemplateSpec,
) {
    let p = karpenter::api::Provisioner::new(
        "templated",
        karpenter::api::ProvisionerSpec {
            provider_ref: Some(karpenter::api::provisioner::ProviderRef {
                api_version: None,
                kind: None,
                name: "tpl".into(),
            }),
            ..Default::default()
        },
    );
    (p, spec)
}

#[test]
fn node_template_user_data_is_merged_and_detailed_monitoring_applied() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let (p, spec) = node_template_provisioner(karpenter::api::AwsNodeTemplateSpec {
            user_data: Some("#!/bin/bash\necho before-bootstrap\n".into()),
            detailed_monitoring: Some(true),
            ..Default::default()
        });
        cloud.set_node_template("tpl", spec);
        cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let name = fleets[0].configs[0].launch_template_name.clone();
        let ud = user_data_of(&cloud, &name);
        assert!(ud.starts_with("MIME-Version: 1.0"), "{ud}");
        let mine = ud
            .find("echo before-bootstrap")
            .expect("the user's script is kept");
        let ours = ud.find("/etc/eks/bootstrap.sh").expect("ours is there");
        assert!(mine < ours, "the user's part runs first: {ud}");
        let spec = cloud.api().templates.lock().unwrap()[&name].clone();
        assert!(spec.detailed_monitoring);
        assert_eq!(spec.tags["karpenter.sh/provisioner-name"], "templated");
        assert_eq!(spec.tags["kubernetes.io/cluster/demo"], "owned");
        // moto keeps what the SDK sent.
        let v = cloud
            .api()
            .inner_api()
            .ec2()
            .describe_launch_template_versions()
            .launch_template_name(&name)
            .send()
            .await
            .unwrap();
        let data = v.launch_template_versions()[0]
            .launch_template_data()
            .unwrap();
        assert_eq!(data.monitoring().and_then(|m| m.enabled()), Some(true));
        // Bottlerocket: TOML merged, ours winning on the cluster name.
        let (p, spec) = node_template_provisioner(karpenter::api::AwsNodeTemplateSpec {
            ami_family: Some("Bottlerocket".into()),
            user_data: Some(
                "[settings.kubernetes]\ncluster-name = \"other\"\n[settings.host-containers.admin]\nenabled = true\n"
                    .into(),
            ),
            ..Default::default()
        });
        cloud.set_node_template("tpl", spec);
        cloud
            .create(&request(&p, "node-2", &["m5.large"]))
            .await
            .unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let ud = user_data_of(&cloud, &fleets[1].configs[0].launch_template_name);
        assert!(ud.contains("cluster-name = \"demo\""), "{ud}");
        assert!(!ud.contains("other"), "{ud}");
        assert!(ud.contains("[settings.host-containers.admin]"), "{ud}");
        // User data that is not TOML is a configuration error, and nothing launches.
        let (p, spec) = node_template_provisioner(karpenter::api::AwsNodeTemplateSpec {
            ami_family: Some("Bottlerocket".into()),
            user_data: Some("[settings\n".into()),
            ..Default::default()
        });
        cloud.set_node_template("tpl", spec);
        let err = cloud
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        assert!(err.to_string().contains("TOML"), "{err}");
        assert_eq!(cloud.api().fleets.lock().unwrap().len(), 2);
    });
}

#[test]
fn the_ami_selector_picks_the_newest_matching_ami_per_architecture() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        let fx = fixture(cloud.api().inner_api()).await;
        let image = |id: &str, arch: &str, date: &str| Image {
            id: id.into(),
            name: format!("golden-{date}"),
            architecture: arch.into(),
            creation_date: date.into(),
        };
        // fx.ami is the newest x86_64 one, fx.ami_arm64 the only arm64 one.
        *cloud.api().images.lock().unwrap() = Some(vec![
            image(
                "ami-00000000000000old",
                "x86_64",
                "2023-01-01T00:00:00.000Z",
            ),
            image(&fx.ami, "x86_64", "2024-06-01T00:00:00.000Z"),
            image(&fx.ami_arm64, "arm64", "2024-01-01T00:00:00.000Z"),
        ]);
        let (p, spec) = node_template_provisioner(karpenter::api::AwsNodeTemplateSpec {
            ami_selector: Some([("aws::name".to_string(), "golden-*".to_string())].into()),
            ..Default::default()
        });
        cloud.set_node_template("tpl", spec);
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large", "m6g.large"]))
            .await
            .unwrap();
        assert_eq!(i.image_id, fx.ami);
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let amis: Vec<String> = fleets[0]
            .configs
            .iter()
            .map(|c| {
                cloud.api().templates.lock().unwrap()[&c.launch_template_name]
                    .image_id
                    .clone()
            })
            .collect();
        assert_eq!(amis, [fx.ami.clone(), fx.ami_arm64.clone()]);
        let (filters, owners, ids) = cloud.api().image_queries.lock().unwrap()[0].clone();
        assert_eq!(filters, [Filter::new("name", &["golden-*"])]);
        assert_eq!(owners, ["self", "amazon"]);
        assert!(ids.is_empty());
        // Only arm64 AMIs selected: the amd64 types are left out, not booted with arm64.
        *cloud.api().images.lock().unwrap() = Some(vec![image(
            &fx.ami_arm64,
            "arm64",
            "2024-01-01T00:00:00.000Z",
        )]);
        let (p, spec) = node_template_provisioner(karpenter::api::AwsNodeTemplateSpec {
            ami_selector: Some([("team".to_string(), "arm".to_string())].into()),
            ..Default::default()
        });
        cloud.set_node_template("tpl", spec);
        // The engine is not offered types no selected AMI can boot.
        let types = cloud.instance_types(&p).await.unwrap();
        assert!(types.iter().any(|t| t.name == "m6g.large"));
        assert!(!types.iter().any(|t| t.name == "m5.large"));
        assert!(types
            .iter()
            .all(|t| t.labels["kubernetes.io/arch"] == "arm64"));
        let i = cloud
            .create(&request(&p, "node-2", &["m5.large", "m6g.large"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m6g.large");
        assert_eq!(i.image_id, fx.ami_arm64);
        let err = cloud
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        // Nothing matches: a configuration error naming the selector.
        *cloud.api().images.lock().unwrap() = Some(vec![]);
        let (p, spec) = node_template_provisioner(karpenter::api::AwsNodeTemplateSpec {
            ami_selector: Some([("team".to_string(), "nobody".to_string())].into()),
            ..Default::default()
        });
        cloud.set_node_template("tpl", spec);
        let err = cloud
            .create(&request(&p, "node-4", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("team=nobody"), "{err}");
    });
}

/// Names of every launch template in moto.
async fn template_names(api: &SdkApi) -> BTreeSet<String> {
    api.ec2()
        .describe_launch_templates()
        .send()
        .await
        .unwrap()
        .launch_templates()
        .iter()
        .filter_map(|t| t.launch_template_name().map(str::to_string))
        .collect()
}

#[test]
fn unused_launch_templates_are_deleted_and_found_again_by_tag_after_a_restart() {
    use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
    let m = moto();
    let (clock, cloud) = cloud(&m);
    block_on(async {
        let fx = fixture(cloud.api().inner_api()).await;
        // A node group's template with only the cluster tag: never ours to delete.
        cloud
            .api()
            .inner_api()
            .ec2()
            .create_launch_template()
            .launch_template_name("node-group")
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id(&fx.ami)
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(
                        Tag::builder()
                            .key("kubernetes.io/cluster/demo")
                            .value("owned")
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let p = provisioner("default", AwsProvider::default());
        cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        cloud
            .create(&request(&p, "node-2", &["m5.xlarge"]))
            .await
            .unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let (a, b) = (
            fleets[0].configs[0].launch_template_name.clone(),
            fleets[1].configs[0].launch_template_name.clone(),
        );
        assert_ne!(a, b);
        let spec = cloud.api().templates.lock().unwrap()[&a].clone();
        assert_eq!(spec.tags["karpenter.sh/provisioner-name"], "default");
        assert_eq!(spec.tags["karpenter.sh/managed-by"], "demo");
        // A restarted controller finds ours by tag, and only ours.
        let (_, fresh) = cloud_with_clock(&m);
        assert_eq!(fresh.load_launch_templates().await.unwrap(), 2);
        // Nothing is idle yet.
        assert!(cloud.collect_garbage().await.unwrap().is_empty());
        clock.advance(Duration::from_secs(20 * 60));
        cloud
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap();
        clock.advance(Duration::from_secs(11 * 60));
        // b went unused for 31 minutes, a for 11: only b goes.
        assert_eq!(
            cloud.collect_garbage().await.unwrap(),
            std::slice::from_ref(&b)
        );
        let names = template_names(cloud.api().inner_api()).await;
        assert_eq!(names, [a.clone(), "node-group".to_string()].into());
        // At most one look per interval.
        clock.advance(Duration::from_secs(40 * 60));
        assert_eq!(
            cloud.collect_garbage().await.unwrap(),
            std::slice::from_ref(&a)
        );
        assert!(cloud.collect_garbage().await.unwrap().is_empty());
        // A launch that needs a deleted template creates it again.
        cloud
            .create(&request(&p, "node-4", &["m5.xlarge"]))
            .await
            .unwrap();
        assert!(template_names(cloud.api().inner_api()).await.contains(&b));
        assert_eq!(cloud.api().deleted_templates.lock().unwrap().len(), 2);
    });
}

#[test]
fn subnets_and_security_groups_are_cached_for_a_minute() {
    let m = moto();
    let (clock, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        let calls = || cloud.api().discovery_calls.load(Ordering::SeqCst);
        cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(
            calls(),
            2,
            "one DescribeSubnets, one DescribeSecurityGroups"
        );
        clock.advance(Duration::from_secs(59));
        cloud
            .create(&request(&p, "node-2", &["m5.large"]))
            .await
            .unwrap();
        cloud.instance_types(&p).await.unwrap();
        assert_eq!(calls(), 2, "served from the cache within the minute");
        clock.advance(Duration::from_secs(2));
        cloud
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(calls(), 4, "looked up again after a minute");
        // Another selector is another cache entry.
        let other = provisioner(
            "other",
            AwsProvider {
                subnet_selector: Some(
                    [("karpenter.sh/discovery".to_string(), "demo,x".to_string())].into(),
                ),
                ..Default::default()
            },
        );
        cloud.instance_types(&other).await.unwrap();
        assert_eq!(calls(), 5);
    });
}

/// The on-demand offering prices of a type, one per zone.
fn on_demand_prices_of(
    types: &[karpenter::scheduling::InstanceType],
    name: &str,
) -> Vec<(Option<f64>, bool)> {
    types
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("{name} not offered"))
        .offerings
        .iter()
        .filter(|o| o.capacity_type == "on-demand")
        .map(|o| (o.price, o.available))
        .collect()
}

#[test]
fn on_demand_prices_come_from_the_pricing_api_with_the_builtin_table_as_fallback() {
    let m = moto();
    let clock = Arc::new(ManualClock::new());
    let mut cfg = config();
    cfg.region = "eu-west-1".into();
    let cloud = AwsCloud::new(FaultyApi::new(m.api(None)), cfg, clock.clone());
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        // The region's prices; m5.xlarge is missing from the answer.
        *cloud.api().prices.lock().unwrap() = Some(Ok([("m5.large".to_string(), 0.107)].into()));
        let types = cloud.instance_types(&p).await.unwrap();
        assert_eq!(cloud.api().pricing_regions.lock().unwrap()[0], "eu-west-1");
        assert!(on_demand_prices_of(&types, "m5.large")
            .iter()
            .all(|o| *o == (Some(0.107), true)));
        // No known price: still offered on-demand, priced as unknown, and launchable.
        assert!(on_demand_prices_of(&types, "m5.xlarge")
            .iter()
            .all(|o| *o == (None, true)));
        let i = cloud
            .create(&request(&p, "node-1", &["m5.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.xlarge");
        assert_eq!(i.capacity_type, "on-demand");
        // Live prices are kept for hours: no second lookup when the type cache expires.
        clock.advance(Duration::from_secs(301));
        cloud.instance_types(&p).await.unwrap();
        assert_eq!(cloud.api().pricing_regions.lock().unwrap().len(), 1);
    });
    // The Pricing API unreachable (or not allowed): the built-in table, tried again later.
    drop(m);
    let m = moto();
    let clock = Arc::new(ManualClock::new());
    let cloud = AwsCloud::new(FaultyApi::new(m.api(None)), config(), clock.clone());
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        *cloud.api().prices.lock().unwrap() = Some(Err(ApiError::new(
            "AccessDeniedException",
            "not authorized to perform: pricing:GetProducts",
        )));
        let types = cloud.instance_types(&p).await.unwrap();
        assert!(on_demand_prices_of(&types, "m5.large")
            .iter()
            .all(|o| *o == (Some(0.096), true)));
        *cloud.api().prices.lock().unwrap() = Some(Ok([("m5.large".to_string(), 0.2)].into()));
        clock.advance(Duration::from_secs(301));
        let types = cloud.instance_types(&p).await.unwrap();
        assert!(on_demand_prices_of(&types, "m5.large")
            .iter()
            .all(|o| *o == (Some(0.2), true)));
        assert_eq!(cloud.api().pricing_regions.lock().unwrap().len(), 2);
    });
}

#[test]
fn unsupported_and_vcpu_limit_errors_fall_back_to_the_next_types() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        // A type EC2 does not offer there: the next type launches in the same call.
        cloud.api().refuse.lock().unwrap().insert(
            "on-demand".into(),
            ("Unsupported".into(), Some("m5.large".into())),
        );
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.xlarge");
        assert!(cloud
            .unavailable()
            .is_unavailable("m5.large", "us-east-1a", "on-demand"));
        assert!(!cloud
            .unavailable()
            .is_unavailable("m5.xlarge", "us-east-1a", "on-demand"));
        // The vCPU quota for the type of the next launch, named per override.
        cloud.api().refuse.lock().unwrap().insert(
            "on-demand".into(),
            ("VcpuLimitExceeded".into(), Some("m5.xlarge".into())),
        );
        let i = cloud
            .create(&request(&p, "node-2", &["m5.xlarge", "c5.large"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "c5.large");
        // A quota error for the whole call: nothing is left, and the error says why.
        cloud.api().refuse.lock().unwrap().clear();
        *cloud.api().fail_with.lock().unwrap() = Some(ApiError::new(
            "VcpuLimitExceeded",
            "You have requested more vCPU capacity than your current vCPU limit allows.",
        ));
        let err = cloud
            .create(&request(&p, "node-3", &["t3.medium"]))
            .await
            .unwrap_err();
        match &err {
            CloudError::InsufficientCapacity { detail, .. } => {
                assert!(detail.contains("VcpuLimitExceeded"), "{detail}")
            }
            other => panic!("unexpected {other}"),
        }
        for zone in ["us-east-1a", "us-east-1b"] {
            assert!(cloud
                .unavailable()
                .is_unavailable("t3.medium", zone, "on-demand"));
        }
        assert_eq!(cloud.list().await.unwrap().len(), 2);
    });
}

fn types_of(f: &FleetRequest) -> Vec<&str> {
    let mut v: Vec<&str> = Vec::new();
    for o in f.configs.iter().flat_map(|c| &c.overrides) {
        if !v.contains(&o.instance_type.as_str()) {
            v.push(&o.instance_type);
        }
    }
    v
}

#[test]
fn spot_types_dearer_than_the_cheapest_on_demand_one_are_left_out() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let mut prices = Vec::new();
        for zone in ["us-east-1a", "us-east-1b"] {
            // m5.large is 0.096 on-demand: m5.xlarge's spot price is above it.
            for (t, price) in [("m5.large", 0.03), ("m5.xlarge", 0.15)] {
                prices.push(SpotPrice {
                    instance_type: t.into(),
                    zone: zone.into(),
                    price,
                });
            }
        }
        *cloud.api().spot_prices.lock().unwrap() = Some(prices);
        let p = provisioner("default", AwsProvider::default());
        let mut r = request(&p, "node-1", &["m5.large", "m5.xlarge"]);
        r.capacity_types.insert("spot".into());
        cloud.create(&r).await.unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(fleets[0].capacity_type, "spot");
        assert_eq!(types_of(&fleets[0]), ["m5.large"]);
        // Spot alone is not ranked against on-demand: both are offered.
        r.client_token = "node-2".into();
        r.capacity_types = ["spot".to_string()].into();
        cloud.create(&r).await.unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(types_of(&fleets[1]), ["m5.large", "m5.xlarge"]);
    });
}

#[test]
fn without_a_capacity_type_requirement_the_launch_is_on_demand() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        let mut r = request(&p, "node-1", &["m5.large"]);
        r.capacity_types.clear();
        let i = cloud.create(&r).await.unwrap();
        assert_eq!(i.capacity_type, "on-demand");
        assert_eq!(
            cloud.api().fleets.lock().unwrap()[0].capacity_type,
            "on-demand"
        );
    });
}

#[test]
fn types_past_the_first_60_are_tried_when_those_are_unavailable() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        // Spot-capable types offered in both zones, in catalog order.
        let names: Vec<String> = cloud
            .instance_types(&p)
            .await
            .unwrap()
            .iter()
            .filter(|t| {
                t.offerings
                    .iter()
                    .filter(|o| o.capacity_type == "spot" && o.available)
                    .count()
                    == 2
            })
            .map(|t| t.name.clone())
            .take(70)
            .collect();
        assert_eq!(names.len(), 70, "moto offers enough types");
        for n in &names[..60] {
            for zone in ["us-east-1a", "us-east-1b"] {
                cloud.unavailable().mark(n, zone, "spot");
            }
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut r = request(&p, "node-1", &refs);
        r.capacity_types = ["spot".to_string()].into();
        cloud.create(&r).await.unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let mut sent = types_of(&fleets[0]);
        sent.sort_unstable();
        let mut rest: Vec<&str> = refs[60..].to_vec();
        rest.sort_unstable();
        assert_eq!(sent, rest);
        // And never more than 60 types in one call.
        let all: Vec<String> = cloud
            .instance_types(&p)
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut r = request(&p, "node-2", &all_refs);
        r.capacity_types = ["spot".to_string()].into();
        cloud.create(&r).await.unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert!(all.len() > 60);
        let sent = types_of(&fleets[1]).len();
        // At most 60 types, in at most 50 launch-template configs (EC2's limits): with more
        // distinct kubelet settings than that, the dearest types wait for the next call.
        assert!(sent <= 60 && sent > 0, "{sent}");
        assert!(
            fleets[1].configs.len() <= karpenter::cloud::aws::MAX_LAUNCH_TEMPLATE_CONFIGS,
            "{}",
            fleets[1].configs.len()
        );
        if fleets[1].configs.len() < karpenter::cloud::aws::MAX_LAUNCH_TEMPLATE_CONFIGS {
            assert_eq!(sent, 60);
        }
    });
}

#[test]
fn a_deleted_launch_template_is_recreated_once() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        let lt = cloud.api().fleets.lock().unwrap()[0].configs[0]
            .launch_template_name
            .clone();
        // Someone deletes it (a clean-up script, the console): the cached ID is stale.
        cloud
            .api()
            .inner_api()
            .ec2()
            .delete_launch_template()
            .launch_template_name(&lt)
            .send()
            .await
            .unwrap();
        let i = cloud
            .create(&request(&p, "node-2", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.large");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(fleets.len(), 3, "refused once, then launched");
        assert_eq!(fleets[2].configs[0].launch_template_name, lt);
        assert!(cloud
            .api()
            .inner_api()
            .find_launch_template(&lt)
            .await
            .unwrap()
            .is_some());
        // A template that keeps vanishing is recreated once, then the error surfaces.
        cloud.api().templates_vanish.store(true, Ordering::SeqCst);
        let err = cloud
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some("InvalidLaunchTemplateName.NotFoundException"),
            "{err}"
        );
        assert_eq!(cloud.api().fleets.lock().unwrap().len(), 5);
    });
}

#[test]
fn the_provider_context_is_sent_with_create_fleet() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let with_context = AwsProvider {
            context: Some("c-0123456789abcdef0".into()),
            ..Default::default()
        };
        let p = provisioner("with-context", with_context);
        cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        let p = provisioner("without-context", AwsProvider::default());
        cloud
            .create(&request(&p, "node-2", &["m5.large"]))
            .await
            .unwrap();
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        let contexts: Vec<Option<&str>> = fleets.iter().map(|f| f.context.as_deref()).collect();
        assert_eq!(contexts, [Some("c-0123456789abcdef0"), None]);
    });
}

#[test]
fn overrides_keep_the_cheapest_first_order_and_zonal_subnets() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        let fx = fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        let mut r = request(
            &p,
            "node-1",
            &["t3.medium", "m5.large", "m5.xlarge", "m6g.large"],
        );
        r.capacity_types.insert("spot".into());
        cloud.create(&r).await.unwrap();
        let fleet = cloud.api().fleets.lock().unwrap()[0].clone();
        assert_eq!(fleet.capacity_type, "spot");
        // One launch template per architecture and planned kubelet settings: these four types
        // differ in max pods or reserved cpu, so four configs, in option order.
        assert_eq!(fleet.configs.len(), 4);
        let names: BTreeSet<&str> = fleet
            .configs
            .iter()
            .map(|c| c.launch_template_name.as_str())
            .collect();
        assert_eq!(names.len(), 4);
        let amd: Vec<(&str, &str)> = fleet.configs[..3]
            .iter()
            .flat_map(|c| &c.overrides)
            .map(|o| (o.instance_type.as_str(), o.subnet_id.as_str()))
            .collect();
        let (a, b) = (fx.subnets[0].as_str(), fx.subnets[1].as_str());
        assert_eq!(
            amd,
            vec![
                ("t3.medium", a),
                ("t3.medium", b),
                ("m5.large", a),
                ("m5.large", b),
                ("m5.xlarge", a),
                ("m5.xlarge", b),
            ]
        );
        assert_eq!(fleet.configs[3].overrides[0].instance_type, "m6g.large");
        assert_eq!(fleet.tags["karpenter.sh/client-token"], "node-1");
        assert!(
            fleet.client_token.starts_with("node-1-"),
            "{}",
            fleet.client_token
        );
        assert!(fleet.client_token.len() <= 64);
    });
}

#[test]
fn a_launch_retried_with_other_overrides_sends_another_client_token() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        cloud
            .api()
            .out_of_capacity
            .lock()
            .unwrap()
            .insert("m5.large".into());
        let err = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, CloudError::InsufficientCapacity { .. }),
            "{err}"
        );
        // The same node again with more types: EC2 would refuse the first token with these
        // overrides for a day, so the node would never launch.
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large", "m5.xlarge"]))
            .await
            .unwrap();
        assert_eq!(i.instance_type, "m5.xlarge");
        let fleets = cloud.api().fleets.lock().unwrap().clone();
        assert_eq!(fleets.len(), 2);
        assert_ne!(fleets[0].client_token, fleets[1].client_token);
        for f in &fleets {
            assert!(f.client_token.starts_with("node-1-"), "{}", f.client_token);
            assert_eq!(f.tags["karpenter.sh/client-token"], "node-1");
        }
        // The wrapper answers as EC2 does: a used token with other parameters is refused...
        let reused = FleetRequest {
            client_token: fleets[0].client_token.clone(),
            ..fleets[1].clone()
        };
        let err = cloud.api().create_fleet(&reused).await.unwrap_err();
        assert_eq!(err.code, "IdempotentParameterMismatch");
        // ...and the same parameters replay the first answer without launching again.
        let calls = cloud.api().launched_calls.load(Ordering::SeqCst);
        let replay = cloud.api().create_fleet(&fleets[1]).await.unwrap();
        assert_eq!(replay.instances[0].id, i.id);
        assert_eq!(cloud.api().launched_calls.load(Ordering::SeqCst), calls);
        assert_eq!(cloud.list().await.unwrap().len(), 1);
    });
}

#[test]
fn throttling_is_retried_with_backoff_on_the_clock() {
    let m = moto();
    let (clock, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        // Two throttled DescribeSubnets, then fine.
        cloud.api().throttle.store(2, Ordering::SeqCst);
        cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        // Jittered: half to all of 200 ms, then of 400 ms.
        let sleeps = clock.sleeps();
        assert_eq!(sleeps.len(), 2, "{sleeps:?}");
        let ms = |n| Duration::from_millis(n);
        assert!(sleeps[0] >= ms(100) && sleeps[0] <= ms(200), "{sleeps:?}");
        assert!(sleeps[1] >= ms(200) && sleeps[1] <= ms(400), "{sleeps:?}");
        // Throttling beyond the attempt budget surfaces with the AWS code.
        cloud.api().throttle.store(100, Ordering::SeqCst);
        let err = cloud
            .create(&request(&p, "node-2", &["m5.large"]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("RequestLimitExceeded"), "{err}");
        cloud.api().throttle.store(0, Ordering::SeqCst);
        // A non-retryable error is not retried and keeps its code and message.
        let before = clock.sleeps().len();
        *cloud.api().fail_with.lock().unwrap() = Some(ApiError::new(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        ));
        let err = cloud
            .create(&request(&p, "node-3", &["m5.large"]))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CreateFleet failed: UnauthorizedOperation: You are not authorized to perform this operation."
        );
        assert_eq!(clock.sleeps().len(), before);
    });
}

#[test]
fn a_lost_create_fleet_response_does_not_launch_twice() {
    let m = moto();
    let (clock, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        let p = provisioner("default", AwsProvider::default());
        cloud.api().lose_response.store(1, Ordering::SeqCst);
        let i = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(clock.sleeps().len(), 1, "retried once");
        assert_eq!(cloud.api().launched_calls.load(Ordering::SeqCst), 1);
        // Same token again (e.g. after a controller restart): the same instance.
        let again = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap();
        assert_eq!(again.id, i.id);
        assert_eq!(cloud.api().launched_calls.load(Ordering::SeqCst), 1);
        let listed = cloud.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, i.id);
    });
}

#[test]
fn an_unknown_instance_profile_is_a_configuration_error() {
    let m = moto();
    let (_, cloud) = cloud(&m);
    block_on(async {
        fixture(cloud.api().inner_api()).await;
        // The profile exists in IAM (the fixture creates it), but EC2 still rejects it, e.g.
        // while IAM changes propagate: what EC2 answers per override in that case.
        *cloud.api().fleet_error.lock().unwrap() = Some(FleetError {
            instance_type: Some("m5.large".into()),
            subnet_id: None,
            code: "InvalidParameterValue".into(),
            message: "Value (KarpenterNodeInstanceProfile) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name".into(),
        });
        let p = provisioner("default", AwsProvider::default());
        let err = cloud
            .create(&request(&p, "node-1", &["m5.large"]))
            .await
            .unwrap_err();
        assert!(err.is_configuration(), "{err}");
        assert!(
            err.to_string()
                .starts_with("instance profile \"KarpenterNodeInstanceProfile\" is unknown"),
            "{err}"
        );
        assert!(cloud.list().await.unwrap().is_empty());
    });
}

trait InnerApi {
    fn inner_api(&self) -> &SdkApi;
}

impl InnerApi for FaultyApi {
    fn inner_api(&self) -> &SdkApi {
        &self.inner
    }
}
