//! [`Ec2Api`] over aws-sdk-ec2, aws-sdk-ssm, aws-sdk-iam and aws-sdk-pricing.
//!
//! The SDK's own retries are off: [`super::AwsCloud`] retries with its injectable clock.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_ec2::config::retry::RetryConfig;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types as ec2;

use crate::cloud::catalog::{AcceleratorInfo, Architecture, AwsInstanceTypeInfo, GpuInfo};
use crate::cloud::provider::{Instance, InstanceState};

use super::api::{
    ApiError, Ec2Api, Filter, FleetError, FleetInstance, FleetRequest, FleetResponse, Image,
    InstanceProfileInfo, LaunchTemplateInfo, LaunchTemplateSpec, SecurityGroup, SpotPrice, Subnet,
};

/// The spot product Karpenter's instances run as (Linux in a VPC).
pub const SPOT_PRODUCT: &str = "Linux/UNIX (Amazon VPC)";

/// Where the SDK clients connect and how they authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkSettings {
    /// AWS region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint override (e.g. a moto server on 127.0.0.1); `None` uses AWS's endpoints.
    pub endpoint_url: Option<String>,
    /// Page size of describe calls; `None` lets the service choose.
    pub page_size: Option<i32>,
}

/// The SDK-backed API.
#[derive(Debug, Clone)]
pub struct SdkApi {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    iam: aws_sdk_iam::Client,
    pricing: aws_sdk_pricing::Client,
    page_size: Option<i32>,
}

fn sdk_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    e: aws_sdk_ec2::error::SdkError<E, aws_sdk_ec2::config::http::HttpResponse>,
) -> ApiError {
    match e.code() {
        Some(code) => ApiError::new(code, e.message().unwrap_or_default()),
        None => ApiError::new("", &DisplayErrorContext(&e).to_string()),
    }
}

fn filters(f: Vec<Filter>) -> Option<Vec<ec2::Filter>> {
    if f.is_empty() {
        return None;
    }
    Some(
        f.into_iter()
            .map(|f| {
                ec2::Filter::builder()
                    .name(f.name)
                    .set_values(Some(f.values))
                    .build()
            })
            .collect(),
    )
}

fn tags_of(tags: &[ec2::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
        .collect()
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Vec<ec2::Tag> {
    tags.iter()
        .map(|(k, v)| ec2::Tag::builder().key(k).value(v).build())
        .collect()
}

fn u32_of(v: Option<i32>) -> u32 {
    v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)
}

/// Maps one DescribeInstanceTypes entry to a catalog entry (no zones, no price).
pub fn instance_type_info(t: &ec2::InstanceTypeInfo) -> Option<AwsInstanceTypeInfo> {
    let name = t.instance_type()?.as_str().to_string();
    let architecture = match t.processor_info().map(|p| p.supported_architectures()) {
        Some(archs) if archs.iter().any(|a| a.as_str() == "x86_64") => Architecture::Amd64,
        Some(archs) if archs.iter().any(|a| a.as_str() == "arm64") => Architecture::Arm64,
        _ => return None,
    };
    let gpus = t
        .gpu_info()
        .map(|g| g.gpus())
        .unwrap_or_default()
        .iter()
        .map(|g| GpuInfo {
            name: g.name().unwrap_or_default().to_string(),
            manufacturer: g.manufacturer().unwrap_or_default().to_string(),
            count: u32_of(g.count()),
            memory_mib: g
                .memory_info()
                .and_then(|m| m.size_in_mib())
                .and_then(|m| u64::try_from(m).ok())
                .unwrap_or(0),
        })
        .collect();
    let inference_accelerators = t
        .inference_accelerator_info()
        .map(|a| a.accelerators())
        .unwrap_or_default()
        .iter()
        .map(|a| AcceleratorInfo {
            name: a.name().unwrap_or_default().to_string(),
            manufacturer: a.manufacturer().unwrap_or_default().to_string(),
            count: u32_of(a.count()),
        })
        .collect();
    let neuron_devices = t
        .neuron_info()
        .map(|n| n.neuron_devices())
        .unwrap_or_default()
        .iter()
        .map(|a| AcceleratorInfo {
            name: a.name().unwrap_or_default().to_string(),
            manufacturer: "AWS".to_string(),
            count: u32_of(a.count()),
        })
        .collect();
    let network = t.network_info();
    let bandwidth_gbps: f64 = network
        .map(|n| n.network_cards())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.baseline_bandwidth_in_gbps())
        .sum();
    let mut usage: Vec<String> = t
        .supported_usage_classes()
        .iter()
        .map(|u| u.as_str().to_string())
        .filter(|u| u == "on-demand" || u == "spot")
        .collect();
    usage.sort();
    let storage = t.instance_storage_info();
    let nvme = storage.is_some_and(|s| {
        s.nvme_support()
            .is_some_and(|n| matches!(n.as_str(), "required" | "supported"))
    });
    Some(AwsInstanceTypeInfo {
        name,
        architecture,
        vcpu: u32_of(t.v_cpu_info().and_then(|v| v.default_v_cpus())),
        memory_mib: t
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .and_then(|m| u64::try_from(m).ok())
            .unwrap_or(0),
        gpus,
        inference_accelerators,
        neuron_devices,
        max_enis: u32_of(network.and_then(|n| n.maximum_network_interfaces())),
        ipv4_per_eni: u32_of(network.and_then(|n| n.ipv4_addresses_per_interface())),
        hypervisor: t
            .hypervisor()
            .map(|h| h.as_str().to_string())
            .unwrap_or_default(),
        bare_metal: t.bare_metal().unwrap_or(false),
        local_nvme_gb: if nvme {
            storage
                .and_then(|s| s.total_size_in_gb())
                .and_then(|g| u64::try_from(g).ok())
                .unwrap_or(0)
        } else {
            0
        },
        network_bandwidth_mbps: (bandwidth_gbps * 1000.0).round() as u64,
        supported_usage_classes: usage,
        encryption_in_transit: network
            .and_then(|n| n.encryption_in_transit_supported())
            .unwrap_or(false),
        zones: vec![],
        on_demand_price: None,
    })
}

fn instance_of(i: &ec2::Instance) -> Option<Instance> {
    Some(Instance {
        id: i.instance_id()?.to_string(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        zone: i
            .placement()
            .and_then(|p| p.availability_zone())
            .unwrap_or_default()
            .to_string(),
        capacity_type: match i.instance_lifecycle().map(|l| l.as_str()) {
            Some("spot") => "spot".to_string(),
            _ => "on-demand".to_string(),
        },
        state: InstanceState::from_ec2(
            i.state()
                .and_then(|s| s.name())
                .map(|n| n.as_str())
                .unwrap_or("pending"),
        ),
        private_dns_name: i.private_dns_name().unwrap_or_default().to_string(),
        image_id: i.image_id().unwrap_or_default().to_string(),
        tags: tags_of(i.tags()),
    })
}

/// The Pricing API endpoints: us-east-1, eu-central-1 and ap-south-1 (cn-northwest-1 in
/// China); the one nearest a region.
pub fn pricing_endpoint_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "cn-northwest-1"
    } else if region.starts_with("ap-") {
        "ap-south-1"
    } else if ["eu-", "me-", "af-", "il-"]
        .iter()
        .any(|p| region.starts_with(p))
    {
        "eu-central-1"
    } else {
        "us-east-1"
    }
}

/// One GetProducts price-list document (JSON text): the instance type and its hourly
/// on-demand USD price, when the document is an EC2 instance with one.
pub fn on_demand_price_of(doc: &str) -> Option<(String, f64)> {
    let v: serde_json::Value = serde_json::from_str(doc).ok()?;
    let instance_type = v["product"]["attributes"]["instanceType"].as_str()?;
    let terms = v["terms"]["OnDemand"].as_object()?;
    let price = terms
        .values()
        .filter_map(|t| t["priceDimensions"].as_object())
        .flat_map(|d| d.values())
        .filter(|d| {
            d["unit"]
                .as_str()
                .is_none_or(|u| u.eq_ignore_ascii_case("hrs"))
        })
        .filter_map(|d| d["pricePerUnit"]["USD"].as_str()?.parse::<f64>().ok())
        .find(|p| *p > 0.0)?;
    Some((instance_type.to_string(), price))
}

fn gib(q: &crate::api::Quantity) -> Option<i32> {
    let milli = q.milli().ok()?;
    let gib = (milli / 1000 + (1 << 30) - 1) >> 30;
    i32::try_from(gib).ok()
}

// === impl SdkApi ===

impl SdkApi {
    /// Clients with static credentials (tests against a local endpoint; never reads the
    /// environment).
    pub fn with_static_credentials(
        settings: &SdkSettings,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Self {
        let creds = Credentials::new(access_key_id, secret_access_key, None, None, "static");
        let mut ec2 = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(creds.clone())
            .retry_config(RetryConfig::disabled());
        let mut ssm = aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new(settings.region.clone()))
            .credentials_provider(creds.clone())
            .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled());
        let mut iam = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
            .region(aws_sdk_iam::config::Region::new(settings.region.clone()))
            .credentials_provider(creds.clone())
            .retry_config(aws_sdk_iam::config::retry::RetryConfig::disabled());
        let mut pricing = aws_sdk_pricing::Config::builder()
            .behavior_version(aws_sdk_pricing::config::BehaviorVersion::latest())
            .region(aws_sdk_pricing::config::Region::new(
                pricing_endpoint_region(&settings.region),
            ))
            .credentials_provider(creds)
            .retry_config(aws_sdk_pricing::config::retry::RetryConfig::disabled());
        if let Some(url) = &settings.endpoint_url {
            ec2 = ec2.endpoint_url(url);
            ssm = ssm.endpoint_url(url);
            iam = iam.endpoint_url(url);
            pricing = pricing.endpoint_url(url);
        }
        Self {
            ec2: aws_sdk_ec2::Client::from_conf(ec2.build()),
            ssm: aws_sdk_ssm::Client::from_conf(ssm.build()),
            iam: aws_sdk_iam::Client::from_conf(iam.build()),
            pricing: aws_sdk_pricing::Client::from_conf(pricing.build()),
            page_size: settings.page_size,
        }
    }

    /// Clients with the default credential chain (environment, web identity, IMDS).
    pub async fn from_environment(settings: &SdkSettings) -> Self {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        // The Pricing API is served from a few regions only.
        let pricing = aws_sdk_pricing::config::Builder::from(&shared)
            .region(aws_sdk_pricing::config::Region::new(
                pricing_endpoint_region(&settings.region),
            ))
            .build();
        Self {
            ec2: aws_sdk_ec2::Client::new(&shared),
            ssm: aws_sdk_ssm::Client::new(&shared),
            iam: aws_sdk_iam::Client::new(&shared),
            pricing: aws_sdk_pricing::Client::from_conf(pricing),
            page_size: settings.page_size,
        }
    }

    /// The EC2 client, for tests that set up fixtures.
    pub fn ec2(&self) -> &aws_sdk_ec2::Client {
        &self.ec2
    }

    /// The SSM client, for tests that set up fixtures.
    pub fn ssm(&self) -> &aws_sdk_ssm::Client {
        &self.ssm
    }

    /// The IAM client, for tests that set up fixtures.
    pub fn iam(&self) -> &aws_sdk_iam::Client {
        &self.iam
    }
}

impl Ec2Api for SdkApi {
    async fn describe_subnets(&self, f: Vec<Filter>) -> Result<Vec<Subnet>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_subnets()
                .set_filters(filters(f.clone()))
                .set_max_results(self.page_size)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            out.extend(page.subnets().iter().filter_map(|s| {
                Some(Subnet {
                    id: s.subnet_id()?.to_string(),
                    zone: s.availability_zone()?.to_string(),
                    available_ips: s.available_ip_address_count().unwrap_or(0),
                })
            }));
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_security_groups(
        &self,
        f: Vec<Filter>,
    ) -> Result<Vec<SecurityGroup>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_security_groups()
                .set_filters(filters(f.clone()))
                .set_max_results(self.page_size)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            out.extend(page.security_groups().iter().filter_map(|g| {
                Some(SecurityGroup {
                    id: g.group_id()?.to_string(),
                    name: g.group_name().unwrap_or_default().to_string(),
                })
            }));
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_instance_types(&self) -> Result<Vec<AwsInstanceTypeInfo>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_instance_types()
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            out.extend(page.instance_types().iter().filter_map(instance_type_info));
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_instance_type_offerings(&self) -> Result<Vec<(String, String)>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_instance_type_offerings()
                .location_type(ec2::LocationType::AvailabilityZone)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            out.extend(page.instance_type_offerings().iter().filter_map(|o| {
                Some((
                    o.instance_type()?.as_str().to_string(),
                    o.location()?.to_string(),
                ))
            }));
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_spot_price_history(&self) -> Result<Vec<SpotPrice>, ApiError> {
        let mut latest: HashMap<(String, String), (i64, f64)> = HashMap::new();
        let mut token = None;
        // StartTime now: the current price of each (type, zone), not 90 days of history.
        let now = aws_sdk_ec2::primitives::DateTime::from(std::time::SystemTime::now());
        loop {
            let page = self
                .ec2
                .describe_spot_price_history()
                .product_descriptions(SPOT_PRODUCT)
                .start_time(now)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            for p in page.spot_price_history() {
                let (Some(t), Some(z), Some(price)) = (
                    p.instance_type(),
                    p.availability_zone(),
                    p.spot_price().and_then(|s| s.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                let at = p.timestamp().map(|t| t.secs()).unwrap_or(0);
                let e = latest
                    .entry((t.as_str().to_string(), z.to_string()))
                    .or_insert((at, price));
                if at >= e.0 {
                    *e = (at, price);
                }
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut out: Vec<SpotPrice> = latest
            .into_iter()
            .map(|((instance_type, zone), (_, price))| SpotPrice {
                instance_type,
                zone,
                price,
            })
            .collect();
        out.sort_by(|a, b| (&a.instance_type, &a.zone).cmp(&(&b.instance_type, &b.zone)));
        Ok(out)
    }

    async fn describe_images(
        &self,
        f: Vec<Filter>,
        owners: Vec<String>,
        image_ids: Vec<String>,
    ) -> Result<Vec<Image>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        let ids = (!image_ids.is_empty()).then_some(image_ids);
        // MaxResults cannot be combined with image IDs.
        let page_size = if ids.is_some() { None } else { self.page_size };
        loop {
            let page = self
                .ec2
                .describe_images()
                .set_filters(filters(f.clone()))
                .set_owners((!owners.is_empty()).then(|| owners.clone()))
                .set_image_ids(ids.clone())
                .set_max_results(page_size)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            out.extend(page.images().iter().filter_map(|i| {
                Some(Image {
                    id: i.image_id()?.to_string(),
                    name: i.name().unwrap_or_default().to_string(),
                    architecture: i
                        .architecture()
                        .map(|a| a.as_str().to_string())
                        .unwrap_or_default(),
                    creation_date: i.creation_date().unwrap_or_default().to_string(),
                })
            }));
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn on_demand_prices(&self, region: &str) -> Result<HashMap<String, f64>, ApiError> {
        use aws_sdk_pricing::types::{Filter as PriceFilter, FilterType};
        let pricing_error =
            |e: aws_sdk_pricing::error::SdkError<_, _>| match ProvideErrorMetadata::code(&e) {
                Some(code) => ApiError::new(code, e.message().unwrap_or_default()),
                None => ApiError::new(
                    "",
                    &aws_sdk_pricing::error::DisplayErrorContext(&e).to_string(),
                ),
            };
        let mut term_filters = Vec::new();
        for (field, value) in [
            ("regionCode", region),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
            ("licenseModel", "No License required"),
        ] {
            let f = PriceFilter::builder()
                .r#type(FilterType::TermMatch)
                .field(field)
                .value(value)
                .build()
                .map_err(|e| ApiError::new("InvalidParameter", &e.to_string()))?;
            term_filters.push(f);
        }
        let mut out = HashMap::new();
        let mut token = None;
        loop {
            let page = self
                .pricing
                .get_products()
                .service_code("AmazonEC2")
                .format_version("aws_v1")
                .set_filters(Some(term_filters.clone()))
                .max_results(100)
                .set_next_token(token)
                .send()
                .await
                .map_err(pricing_error)?;
            for doc in page.price_list() {
                if let Some((instance_type, price)) = on_demand_price_of(doc) {
                    out.insert(instance_type, price);
                }
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn get_parameter(&self, name: &str) -> Result<String, ApiError> {
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .send()
            .await
            .map_err(|e| match e.code() {
                Some(code) => ApiError::new(code, e.message().unwrap_or_default()),
                None => ApiError::new("", &aws_sdk_ssm::error::DisplayErrorContext(&e).to_string()),
            })?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| ApiError::new("ParameterNotFound", name))
    }

    async fn instance_profile(&self, name: &str) -> Result<Option<InstanceProfileInfo>, ApiError> {
        let out = match self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchEntity") => return Ok(None),
            Err(e) => {
                return Err(match e.code() {
                    Some(code) => ApiError::new(code, e.message().unwrap_or_default()),
                    None => {
                        ApiError::new("", &aws_sdk_iam::error::DisplayErrorContext(&e).to_string())
                    }
                })
            }
        };
        Ok(out.instance_profile().map(|p| InstanceProfileInfo {
            name: p.instance_profile_name().to_string(),
            arn: p.arn().to_string(),
            roles: p
                .roles()
                .iter()
                .map(|r| r.role_name().to_string())
                .collect(),
        }))
    }

    async fn find_launch_template(&self, name: &str) -> Result<Option<String>, ApiError> {
        let res = self
            .ec2
            .describe_launch_templates()
            .launch_template_names(name)
            .send()
            .await;
        match res {
            Ok(out) => Ok(out
                .launch_templates()
                .iter()
                .find_map(|t| t.launch_template_id().map(str::to_string))),
            Err(e) => {
                let e = sdk_error(e);
                if e.code.contains("NotFound") {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn describe_launch_templates(
        &self,
        f: Vec<Filter>,
    ) -> Result<Vec<LaunchTemplateInfo>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .ec2
                .describe_launch_templates()
                .set_filters(filters(f.clone()))
                .set_max_results(self.page_size)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            out.extend(page.launch_templates().iter().filter_map(|t| {
                Some(LaunchTemplateInfo {
                    id: t.launch_template_id()?.to_string(),
                    name: t.launch_template_name()?.to_string(),
                    tags: tags_of(t.tags()),
                })
            }));
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn delete_launch_template(&self, id: &str) -> Result<(), ApiError> {
        self.ec2
            .delete_launch_template()
            .launch_template_id(id)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }

    async fn create_launch_template(&self, spec: &LaunchTemplateSpec) -> Result<String, ApiError> {
        let mut data = ec2::RequestLaunchTemplateData::builder()
            .image_id(&spec.image_id)
            .iam_instance_profile(
                ec2::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(&spec.instance_profile)
                    .build(),
            )
            .set_security_group_ids(Some(spec.security_group_ids.clone()))
            .user_data(&spec.user_data)
            // Network interfaces carry the template's ownership tags (CreateFleet cannot tag
            // them).
            .tag_specifications(
                ec2::LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ec2::ResourceType::NetworkInterface)
                    .set_tags(Some(sdk_tags(&spec.tags)))
                    .build(),
            )
            .monitoring(
                ec2::LaunchTemplatesMonitoringRequest::builder()
                    .enabled(spec.detailed_monitoring)
                    .build(),
            );
        if let Some(m) = &spec.metadata_options {
            data = data.metadata_options(
                ec2::LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .set_http_endpoint(m.http_endpoint.as_deref().map(Into::into))
                    .set_http_protocol_ipv6(m.http_protocol_ipv6.as_deref().map(Into::into))
                    .set_http_put_response_hop_limit(
                        m.http_put_response_hop_limit
                            .and_then(|h| i32::try_from(h).ok()),
                    )
                    .set_http_tokens(m.http_tokens.as_deref().map(Into::into))
                    .build(),
            );
        }
        for b in &spec.block_device_mappings {
            let ebs = b.ebs.as_ref().map(|e| {
                ec2::LaunchTemplateEbsBlockDeviceRequest::builder()
                    .set_delete_on_termination(e.delete_on_termination)
                    .set_encrypted(e.encrypted)
                    .set_iops(e.iops.and_then(|v| i32::try_from(v).ok()))
                    .set_kms_key_id(e.kms_key_id.clone())
                    .set_snapshot_id(e.snapshot_id.clone())
                    .set_throughput(e.throughput.and_then(|v| i32::try_from(v).ok()))
                    .set_volume_size(e.volume_size.as_ref().and_then(gib))
                    .set_volume_type(e.volume_type.as_deref().map(Into::into))
                    .build()
            });
            data = data.block_device_mappings(
                ec2::LaunchTemplateBlockDeviceMappingRequest::builder()
                    .set_device_name(b.device_name.clone())
                    .set_ebs(ebs)
                    .build(),
            );
        }
        let out = self
            .ec2
            .create_launch_template()
            .launch_template_name(&spec.name)
            .launch_template_data(data.build())
            .tag_specifications(
                ec2::TagSpecification::builder()
                    .resource_type(ec2::ResourceType::LaunchTemplate)
                    .set_tags(Some(sdk_tags(&spec.tags)))
                    .build(),
            )
            .send()
            .await
            .map_err(sdk_error)?;
        out.launch_template()
            .and_then(|t| t.launch_template_id())
            .map(str::to_string)
            .ok_or_else(|| ApiError::new("InvalidResponse", "CreateLaunchTemplate returned no ID"))
    }

    async fn create_fleet(&self, request: &FleetRequest) -> Result<FleetResponse, ApiError> {
        let spot = request.capacity_type == "spot";
        let configs: Vec<ec2::FleetLaunchTemplateConfigRequest> = request
            .configs
            .iter()
            .map(|c| {
                ec2::FleetLaunchTemplateConfigRequest::builder()
                    .launch_template_specification(
                        ec2::FleetLaunchTemplateSpecificationRequest::builder()
                            .launch_template_name(&c.launch_template_name)
                            .version("$Latest")
                            .build(),
                    )
                    .set_overrides(Some(
                        c.overrides
                            .iter()
                            .map(|o| {
                                ec2::FleetLaunchTemplateOverridesRequest::builder()
                                    .instance_type(o.instance_type.as_str().into())
                                    .subnet_id(&o.subnet_id)
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            })
            .collect();
        let tags = sdk_tags(&request.tags);
        let tag_spec = |r: ec2::ResourceType| {
            ec2::TagSpecification::builder()
                .resource_type(r)
                .set_tags(Some(tags.clone()))
                .build()
        };
        let mut call = self
            .ec2
            .create_fleet()
            .r#type(ec2::FleetType::Instant)
            .client_token(&request.client_token)
            .set_context(request.context.clone())
            .set_launch_template_configs(Some(configs))
            .target_capacity_specification(
                ec2::TargetCapacitySpecificationRequest::builder()
                    .total_target_capacity(1)
                    .default_target_capacity_type(if spot {
                        ec2::DefaultTargetCapacityType::Spot
                    } else {
                        ec2::DefaultTargetCapacityType::OnDemand
                    })
                    .build(),
            )
            .tag_specifications(tag_spec(ec2::ResourceType::Fleet))
            .tag_specifications(tag_spec(ec2::ResourceType::Instance))
            .tag_specifications(tag_spec(ec2::ResourceType::Volume));
        call = if spot {
            call.spot_options(
                ec2::SpotOptionsRequest::builder()
                    .allocation_strategy(ec2::SpotAllocationStrategy::PriceCapacityOptimized)
                    .build(),
            )
        } else {
            call.on_demand_options(
                ec2::OnDemandOptionsRequest::builder()
                    .allocation_strategy(ec2::FleetOnDemandAllocationStrategy::LowestPrice)
                    .build(),
            )
        };
        let out = call.send().await.map_err(sdk_error)?;
        let lifecycle = |l: Option<&ec2::InstanceLifecycle>| match l.map(|l| l.as_str()) {
            Some("spot") => "spot".to_string(),
            Some(_) => "on-demand".to_string(),
            None => request.capacity_type.clone(),
        };
        let instances = out
            .instances()
            .iter()
            .flat_map(|i| {
                let t = i
                    .instance_type()
                    .map(|t| t.as_str().to_string())
                    .unwrap_or_default();
                let subnet = i
                    .launch_template_and_overrides()
                    .and_then(|lo| lo.overrides())
                    .and_then(|o| o.subnet_id())
                    .map(str::to_string);
                let ct = lifecycle(i.lifecycle());
                i.instance_ids()
                    .iter()
                    .map(move |id| FleetInstance {
                        id: id.clone(),
                        instance_type: t.clone(),
                        subnet_id: subnet.clone(),
                        capacity_type: ct.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let errors = out
            .errors()
            .iter()
            .map(|e| {
                let o = e
                    .launch_template_and_overrides()
                    .and_then(|lo| lo.overrides());
                FleetError {
                    instance_type: o
                        .and_then(|o| o.instance_type())
                        .map(|t| t.as_str().to_string()),
                    subnet_id: o.and_then(|o| o.subnet_id()).map(str::to_string),
                    code: e.error_code().unwrap_or_default().to_string(),
                    message: e.error_message().unwrap_or_default().to_string(),
                }
            })
            .collect();
        Ok(FleetResponse { instances, errors })
    }

    async fn describe_instances(
        &self,
        f: Vec<Filter>,
        instance_ids: Vec<String>,
    ) -> Result<Vec<Instance>, ApiError> {
        let mut out = Vec::new();
        let mut token = None;
        let ids = (!instance_ids.is_empty()).then_some(instance_ids);
        // MaxResults cannot be combined with instance IDs.
        let page_size = if ids.is_some() { None } else { self.page_size };
        loop {
            let page = self
                .ec2
                .describe_instances()
                .set_filters(filters(f.clone()))
                .set_instance_ids(ids.clone())
                .set_max_results(page_size)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk_error)?;
            for r in page.reservations() {
                out.extend(r.instances().iter().filter_map(instance_of));
            }
            token = page
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn terminate_instances(&self, instance_ids: Vec<String>) -> Result<(), ApiError> {
        self.ec2
            .terminate_instances()
            .set_instance_ids(Some(instance_ids))
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_list_documents_give_the_hourly_on_demand_price() {
        let doc = r#"{"product":{"productFamily":"Compute Instance","attributes":{"instanceType":"m5.large","regionCode":"eu-west-1","operatingSystem":"Linux"},"sku":"X"},"serviceCode":"AmazonEC2","terms":{"OnDemand":{"X.JRTCKXETXF":{"priceDimensions":{"X.JRTCKXETXF.6YS6EN2CT7":{"unit":"Hrs","endRange":"Inf","description":"$0.107 per On Demand Linux m5.large Instance Hour","pricePerUnit":{"USD":"0.1070000000"}}},"sku":"X","effectiveDate":"2024-01-01T00:00:00Z"}}}}"#;
        assert_eq!(on_demand_price_of(doc), Some(("m5.large".into(), 0.107)));
        // Not an instance, no on-demand term, a zero price (a reservation's placeholder), junk.
        assert_eq!(
            on_demand_price_of(r#"{"product":{"attributes":{}},"terms":{"OnDemand":{}}}"#),
            None
        );
        assert_eq!(
            on_demand_price_of(r#"{"product":{"attributes":{"instanceType":"x"}},"terms":{}}"#),
            None
        );
        let zero = doc.replace("0.1070000000", "0.0000000000");
        assert_eq!(on_demand_price_of(&zero), None);
        assert_eq!(on_demand_price_of("not json"), None);
    }

    #[test]
    fn the_pricing_endpoint_is_the_nearest_of_its_regions() {
        assert_eq!(pricing_endpoint_region("us-west-2"), "us-east-1");
        assert_eq!(pricing_endpoint_region("eu-west-1"), "eu-central-1");
        assert_eq!(pricing_endpoint_region("ap-northeast-1"), "ap-south-1");
        assert_eq!(pricing_endpoint_region("cn-north-1"), "cn-northwest-1");
        assert_eq!(pricing_endpoint_region("sa-east-1"), "us-east-1");
    }
}
