#![deny(missing_docs)]
//! Instance types for the packer: the built-in AWS catalog mapped to
//! [`InstanceType`]s, and the user catalog file format (YAML or JSON list).
//!
//! ```yaml
//! - name: default-instance-type
//!   architecture: amd64              # becomes kubernetes.io/arch
//!   operatingSystems: [linux]        # kubernetes.io/os values it offers
//!   capacity: {cpu: "4", memory: 4Gi, pods: "5", fake.com/vendor-a: "2"}
//!   overhead: {cpu: 100m, memory: 10Mi}   # optional; when absent the AWS formulas apply
//!   labels: {size: small}            # optional extra node labels
//!   offerings:
//!     - {zone: test-zone-1, capacityType: spot, price: 0.83, available: true}
//!     - {zone: test-zone-3, capacityType: on-demand, price: 0.83}   # available defaults to true
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::labels;
use crate::api::quantity::{parse_milli, Quantity};
use crate::scheduling::instance_type::{mark_absent_labels, InstanceType, Offering, Overhead};
use crate::scheduling::resources::{
    ResourceList, AMD_GPU, AWS_NEURON, CPU, EPHEMERAL_STORAGE, MEMORY, NVIDIA_GPU, PODS,
};

use super::catalog::AwsInstanceTypeInfo;

/// AWS's VM memory overhead: 7.5 % of memory is not visible to the node.
pub const VM_MEMORY_OVERHEAD_PERCENT: f64 = 0.075;
/// Default root volume (ephemeral storage) of launched nodes.
pub const DEFAULT_EPHEMERAL_STORAGE_GI: i64 = 20;

/// Options for mapping the AWS catalog.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AwsCatalogOptions {
    /// Assumed spot discount off the on-demand price (0.0..1.0). `None` leaves spot prices
    /// unknown: spot offerings carry no price and the packer says so in the Decision.
    pub assume_spot_discount: Option<f64>,
}

/// An error in a user instance-type catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceTypeFileError {
    /// The document is not a valid catalog (unknown fields are named).
    #[error("invalid instance-type catalog: {0}")]
    Parse(String),
    /// A quantity is invalid.
    #[error("instance type {name}: invalid quantity {value:?} for {resource}")]
    Quantity {
        /// Instance-type name.
        name: String,
        /// Resource name.
        resource: String,
        /// The quantity.
        value: String,
    },
}

/// One entry of a user instance-type catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceTypeEntry {
    /// Instance-type name.
    pub name: String,
    /// `amd64` or `arm64` (any string is accepted).
    #[serde(default = "default_arch")]
    pub architecture: String,
    /// Operating systems offered.
    #[serde(default = "default_os")]
    pub operating_systems: Vec<String>,
    /// Capacity per resource.
    pub capacity: BTreeMap<String, Quantity>,
    /// Fixed overhead; when absent the AWS formulas apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<BTreeMap<String, Quantity>>,
    /// Extra node labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Offerings.
    pub offerings: Vec<OfferingEntry>,
}

/// One offering of a user catalog entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OfferingEntry {
    /// Zone.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// USD per hour; omit when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Whether capacity is available (default true).
    #[serde(default = "default_true")]
    pub available: bool,
}

fn default_arch() -> String {
    "amd64".into()
}
fn default_os() -> Vec<String> {
    vec!["linux".into()]
}
fn default_true() -> bool {
    true
}

fn parse_map(
    name: &str,
    map: &BTreeMap<String, Quantity>,
) -> Result<ResourceList, InstanceTypeFileError> {
    map.iter()
        .map(|(k, q)| {
            parse_milli(q.as_str())
                .map(|v| (k.clone(), v))
                .map_err(|_| InstanceTypeFileError::Quantity {
                    name: name.to_string(),
                    resource: k.clone(),
                    value: q.as_str().to_string(),
                })
        })
        .collect()
}

// === impl InstanceTypeEntry ===

impl InstanceTypeEntry {
    /// The engine instance type.
    pub fn to_instance_type(&self) -> Result<InstanceType, InstanceTypeFileError> {
        let capacity = parse_map(&self.name, &self.capacity)?;
        let overhead = match &self.overhead {
            Some(o) => Overhead::Fixed(parse_map(&self.name, o)?),
            None => Overhead::Aws,
        };
        let offerings = self
            .offerings
            .iter()
            .map(|o| Offering {
                zone: o.zone.clone(),
                capacity_type: o.capacity_type.clone(),
                price: o.price,
                available: o.available,
            })
            .collect();
        Ok(InstanceType::new(
            &self.name,
            &self.architecture,
            &self.operating_systems,
            capacity,
            overhead,
            self.labels.clone(),
            offerings,
        ))
    }
}

/// Parses a user catalog (YAML or JSON list) into instance types.
pub fn parse_instance_types(text: &str) -> Result<Vec<InstanceType>, InstanceTypeFileError> {
    let entries: Vec<InstanceTypeEntry> =
        serde_yaml::from_str(text).map_err(|e| InstanceTypeFileError::Parse(e.to_string()))?;
    let mut types = entries
        .iter()
        .map(InstanceTypeEntry::to_instance_type)
        .collect::<Result<Vec<_>, _>>()?;
    mark_absent_labels(&mut types);
    Ok(types)
}

const MIB: i64 = 1024 * 1024 * 1000;

/// Maps one AWS catalog entry to an instance type (all its zones, on-demand and spot).
pub fn aws_instance_type(info: &AwsInstanceTypeInfo, opts: &AwsCatalogOptions) -> InstanceType {
    let mut capacity = ResourceList::new();
    capacity.insert(CPU.into(), i64::from(info.vcpu) * 1000);
    let mem_mib = info.memory_mib as f64 * (1.0 - VM_MEMORY_OVERHEAD_PERCENT);
    capacity.insert(MEMORY.into(), (mem_mib.floor() as i64) * MIB);
    capacity.insert(PODS.into(), i64::from(info.max_pods_eni()) * 1000);
    capacity.insert(
        EPHEMERAL_STORAGE.into(),
        DEFAULT_EPHEMERAL_STORAGE_GI * 1024 * MIB,
    );
    let mut l = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        l.insert(k.to_string(), v);
    };
    put(labels::INSTANCE_CATEGORY, info.category().to_string());
    put(labels::INSTANCE_FAMILY, info.family().to_string());
    if let Some(g) = info.generation() {
        put(labels::INSTANCE_GENERATION, g.to_string());
    }
    put(labels::INSTANCE_SIZE, info.size().to_string());
    put(labels::INSTANCE_CPU, info.vcpu.to_string());
    put(labels::INSTANCE_MEMORY, info.memory_mib.to_string());
    put(labels::INSTANCE_PODS, info.max_pods_eni().to_string());
    put(labels::INSTANCE_HYPERVISOR, info.hypervisor.clone());
    put(
        labels::INSTANCE_ENCRYPTION_IN_TRANSIT,
        info.encryption_in_transit.to_string(),
    );
    if info.network_bandwidth_mbps > 0 {
        put(
            labels::INSTANCE_NETWORK_BANDWIDTH,
            info.network_bandwidth_mbps.to_string(),
        );
    }
    if info.local_nvme_gb > 0 {
        put(labels::INSTANCE_LOCAL_NVME, info.local_nvme_gb.to_string());
    }
    if let Some(g) = info.gpus.first() {
        put(labels::INSTANCE_GPU_NAME, g.name.to_lowercase());
        put(
            labels::INSTANCE_GPU_MANUFACTURER,
            g.manufacturer.to_lowercase(),
        );
        put(
            labels::INSTANCE_GPU_COUNT,
            info.gpus.iter().map(|g| g.count).sum::<u32>().to_string(),
        );
        put(labels::INSTANCE_GPU_MEMORY, g.memory_mib.to_string());
    }
    if let Some(a) = info
        .inference_accelerators
        .first()
        .or(info.neuron_devices.first())
    {
        put(labels::INSTANCE_ACCELERATOR_NAME, a.name.to_lowercase());
        put(
            labels::INSTANCE_ACCELERATOR_MANUFACTURER,
            a.manufacturer.to_lowercase(),
        );
        put(labels::INSTANCE_ACCELERATOR_COUNT, a.count.to_string());
    }
    for g in &info.gpus {
        let res = match g.manufacturer.to_ascii_lowercase().as_str() {
            "nvidia" => NVIDIA_GPU,
            "amd" => AMD_GPU,
            _ => continue,
        };
        *capacity.entry(res.into()).or_insert(0) += i64::from(g.count) * 1000;
    }
    // Neuron devices (Inferentia/Trainium); older catalogs list them as inference accelerators.
    let neuron_list = if info.neuron_devices.is_empty() {
        &info.inference_accelerators
    } else {
        &info.neuron_devices
    };
    let neuron: u32 = neuron_list
        .iter()
        .filter(|a| a.manufacturer.eq_ignore_ascii_case("AWS"))
        .map(|a| a.count)
        .sum();
    if neuron > 0 {
        capacity.insert(AWS_NEURON.into(), i64::from(neuron) * 1000);
    }
    let spot_price = match (opts.assume_spot_discount, info.on_demand_price) {
        (Some(d), Some(p)) => Some(p * (1.0 - d.clamp(0.0, 1.0))),
        _ => None,
    };
    let mut offerings = Vec::new();
    for z in &info.zones {
        for ct in &info.supported_usage_classes {
            let price = match ct.as_str() {
                labels::CAPACITY_TYPE_ON_DEMAND => info.on_demand_price,
                labels::CAPACITY_TYPE_SPOT => spot_price,
                _ => continue,
            };
            offerings.push(Offering {
                zone: z.clone(),
                capacity_type: ct.clone(),
                price,
                // Without any price an on-demand offering cannot be chosen by price.
                available: price.is_some() || ct == labels::CAPACITY_TYPE_SPOT,
            });
        }
    }
    InstanceType::new(
        &info.name,
        info.architecture.as_str(),
        &["linux".to_string()],
        capacity,
        Overhead::Aws,
        l,
        offerings,
    )
}

/// The built-in us-east-1 catalog as instance types.
pub fn builtin_us_east_1(
    opts: &AwsCatalogOptions,
) -> Result<Vec<InstanceType>, super::catalog::CatalogError> {
    let mut types: Vec<InstanceType> = super::catalog::builtin_us_east_1()?
        .iter()
        .map(|i| aws_instance_type(i, opts))
        .collect();
    mark_absent_labels(&mut types);
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m5_large_allocatable() {
        let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
        let t = types.iter().find(|t| t.name == "m5.large").unwrap();
        let a = t.allocatable(None);
        assert_eq!(a[CPU], 1930);
        assert_eq!(t.labels[labels::INSTANCE_FAMILY], "m5");
        assert_eq!(t.labels[labels::INSTANCE_GENERATION], "5");
        let spot = t
            .offerings
            .iter()
            .find(|o| o.capacity_type == "spot")
            .unwrap();
        assert_eq!(spot.price, None, "spot prices are unknown offline");
        let types = builtin_us_east_1(&AwsCatalogOptions {
            assume_spot_discount: Some(0.5),
        })
        .unwrap();
        let t = types.iter().find(|t| t.name == "m5.large").unwrap();
        let spot = t
            .offerings
            .iter()
            .find(|o| o.capacity_type == "spot")
            .unwrap();
        assert_eq!(spot.price, Some(0.048));
    }

    #[test]
    fn gpus_become_resources() {
        let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
        let t = types.iter().find(|t| t.name == "p3dn.24xlarge").unwrap();
        assert_eq!(t.capacity[NVIDIA_GPU], 8000);
        assert_eq!(t.labels[labels::INSTANCE_GPU_MANUFACTURER], "nvidia");
        let t = types.iter().find(|t| t.name == "inf2.xlarge").unwrap();
        assert_eq!(t.capacity[AWS_NEURON], 1000);
    }

    #[test]
    fn user_catalog_rejects_unknown_fields() {
        let err = parse_instance_types(
            "- name: x\n  capacity: {cpu: '1'}\n  offerings: []\n  bogus: 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = parse_instance_types(
            "- name: x\n  capacity: {cpu: '1'}\n  offerings: [{zone: a, capacityType: spot, prize: 1}]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("prize"), "{err}");
    }

    #[test]
    fn user_catalog_parses() {
        let types = parse_instance_types(
            "- name: x\n  capacity: {cpu: '4', memory: 4Gi, pods: '5'}\n  overhead: {cpu: 100m}\n  offerings:\n  - {zone: z1, capacityType: spot, price: 0.5}\n",
        )
        .unwrap();
        assert_eq!(types[0].allocatable(None)[CPU], 3900);
        assert!(types[0].offerings[0].available);
    }
}
