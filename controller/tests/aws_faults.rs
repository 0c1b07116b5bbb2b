//! The AWS provider with faults moto never produces, injected by a wrapper around the real
//! SDK-backed API (still talking to a moto server on 127.0.0.1): insufficient capacity per
//! instance type, throttling, and a lost CreateFleet response. Time is a manual clock: no test
//! sleeps.

mod support_moto;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use karpenter::api::AwsProvider;
use karpenter::cloud::aws::api::{
    Filter, FleetError, FleetRequest, FleetResponse, InstanceProfileInfo, LaunchTemplateSpec,
    SecurityGroup, SpotPrice, Subnet,
};
use karpenter::cloud::aws::{ApiError, AwsCloud, Ec2Api, SdkApi};
use karpenter::cloud::catalog::AwsInstanceTypeInfo;
use karpenter::cloud::provider::{CloudError, CloudProvider, Instance, ManualClock};
use support_moto::*;

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
        }
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn throttled() -> ApiError {
        ApiError::new("RequestLimitExceeded", "Request limit exceeded.")
    }
}

impl Ec2Api for FaultyApi {
    async fn describe_subnets(&self, filters: Vec<Filter>) -> Result<Vec<Subnet>, ApiError> {
        if Self::take(&self.throttle) {
            return Err(Self::throttled());
        }
        self.inner.describe_subnets(filters).await
    }

    async fn describe_security_groups(
        &self,
        filters: Vec<Filter>,
    ) -> Result<Vec<SecurityGroup>, ApiError> {
        self.inner.describe_security_groups(filters).await
    }

    async fn describe_instance_types(&self) -> Result<Vec<AwsInstanceTypeInfo>, ApiError> {
        self.inner.describe_instance_types().await
    }

    async fn describe_instance_type_offerings(&self) -> Result<Vec<(String, String)>, ApiError> {
        self.inner.describe_instance_type_offerings().await
    }

    async fn describe_spot_price_history(&self) -> Result<Vec<SpotPrice>, ApiError> {
        self.inner.describe_spot_price_history().await
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

    async fn create_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, ApiError> {
        self.inner.create_launch_template(spec).await
    }

    async fn create_fleet(&self, request: &FleetRequest) -> Result<FleetResponse, ApiError> {
        self.fleets.lock().unwrap().push(request.clone());
        if Self::take(&self.throttle) {
            return Err(Self::throttled());
        }
        if let Some(e) = self.fail_with.lock().unwrap().take() {
            return Err(e);
        }
        if let Some(e) = self.fleet_error.lock().unwrap().take() {
            return Ok(FleetResponse {
                instances: vec![],
                errors: vec![e],
            });
        }
        let out = self.out_of_capacity.lock().unwrap().clone();
        let mut errors = Vec::new();
        let mut passed = request.clone();
        for c in &mut passed.configs {
            c.overrides.retain(|o| {
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
        if Self::take(&self.lose_response) {
            return Err(ApiError::new("", "connection reset by peer"));
        }
        response.errors.extend(errors);
        Ok(response)
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

fn cloud(m: &Moto) -> (Arc<ManualClock>, AwsCloud<FaultyApi>) {
    let clock = Arc::new(ManualClock::new());
    let cloud = AwsCloud::new(FaultyApi::new(m.api(None)), config(), clock.clone());
    (clock, cloud)
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
        assert_eq!(
            fleet.configs.len(),
            2,
            "one launch template per architecture"
        );
        let amd: Vec<(&str, &str)> = fleet.configs[0]
            .overrides
            .iter()
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
        assert_eq!(fleet.configs[1].overrides[0].instance_type, "m6g.large");
        assert_ne!(
            fleet.configs[0].launch_template_name,
            fleet.configs[1].launch_template_name
        );
        assert_eq!(fleet.tags["karpenter.sh/client-token"], "node-1");
        assert_eq!(fleet.client_token, "node-1-0");
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
        assert_eq!(
            clock.sleeps(),
            vec![Duration::from_millis(200), Duration::from_millis(400)]
        );
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
