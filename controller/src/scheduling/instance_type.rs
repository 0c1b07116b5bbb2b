//! Instance types as the packer sees them: labels (as requirements), capacity, overhead and
//! zone/capacity-type offerings, with AWS's allocatable formulas.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::labels;
use crate::api::provisioner::KubeletConfiguration;
use crate::api::quantity::parse_milli;

use super::requirements::{Requirements, ValueSet};
use super::resources::{ResourceList, CPU, EPHEMERAL_STORAGE, MEMORY, PODS};

/// Where and how an instance type can be bought.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    /// Availability zone.
    pub zone: String,
    /// `spot` or `on-demand`.
    pub capacity_type: String,
    /// USD per hour; `None` when unknown (e.g. spot prices offline).
    pub price: Option<f64>,
    /// Whether capacity is currently available.
    pub available: bool,
}

/// How allocatable is derived from capacity.
#[derive(Debug, Clone, PartialEq)]
pub enum Overhead {
    /// A fixed overhead (kube-reserved + system-reserved + eviction), as user catalogs give it.
    Fixed(ResourceList),
    /// AWS's formulas from the vCPU count and pod density.
    Aws,
}

/// One instance type with its offerings.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// Name, e.g. `m5.large`.
    pub name: String,
    /// Node labels every node of this type gets (arch, os, instance-type, family, ...).
    pub labels: BTreeMap<String, String>,
    /// Requirements: the labels plus zones and capacity types from the offerings and the OSes.
    pub requirements: Requirements,
    /// Capacity (memory already net of VM overhead; `pods` the default pod density).
    pub capacity: ResourceList,
    /// How allocatable is computed.
    pub overhead: Overhead,
    /// Offerings.
    pub offerings: Vec<Offering>,
}

// === impl InstanceType ===

impl InstanceType {
    /// Builds an instance type; requirements are derived from labels, OSes and offerings.
    pub fn new(
        name: &str,
        architecture: &str,
        operating_systems: &[String],
        capacity: ResourceList,
        overhead: Overhead,
        extra_labels: BTreeMap<String, String>,
        offerings: Vec<Offering>,
    ) -> Self {
        let mut node_labels = extra_labels;
        node_labels.insert(labels::INSTANCE_TYPE.to_string(), name.to_string());
        node_labels.insert(labels::ARCH.to_string(), architecture.to_string());
        let mut requirements = Requirements::from_labels(&node_labels);
        if !operating_systems.is_empty() {
            requirements.add(
                labels::OS,
                ValueSet::is_in(operating_systems.iter().cloned()),
            );
        }
        let zones: BTreeSet<String> = offerings.iter().map(|o| o.zone.clone()).collect();
        let cts: BTreeSet<String> = offerings.iter().map(|o| o.capacity_type.clone()).collect();
        requirements.add(labels::ZONE, ValueSet::is_in(zones));
        requirements.add(labels::CAPACITY_TYPE, ValueSet::is_in(cts));
        InstanceType {
            name: name.to_string(),
            labels: node_labels,
            requirements,
            capacity,
            overhead,
            offerings,
        }
    }

    /// vCPUs (capacity cpu, whole cores rounded up).
    pub fn vcpus(&self) -> i64 {
        (self.capacity.get(CPU).copied().unwrap_or(0) + 999) / 1000
    }

    /// Capacity with the kubelet's pod density applied (`maxPods`, `podsPerCore`).
    pub fn capacity_for(&self, kubelet: Option<&KubeletConfiguration>) -> ResourceList {
        let mut cap = self.capacity.clone();
        if let Some(k) = kubelet {
            let mut pods = cap.get(PODS).copied().unwrap_or(0) / 1000;
            if let Some(m) = k.max_pods {
                pods = i64::from(m.max(0));
            }
            if let Some(ppc) = k.pods_per_core.filter(|p| *p > 0) {
                pods = pods.min(i64::from(ppc) * self.vcpus());
            }
            cap.insert(PODS.to_string(), pods * 1000);
        }
        cap
    }

    /// The resources reserved on a node: kube-reserved, system-reserved and eviction thresholds.
    pub fn overhead_for(&self, kubelet: Option<&KubeletConfiguration>) -> ResourceList {
        let r = self.reservations(kubelet);
        let mut total = r.kube_reserved;
        super::resources::add_into(&mut total, &r.eviction_hard);
        super::resources::add_into(&mut total, &r.system_reserved);
        total
    }

    /// The reservations the engine plans with, one list per kubelet setting: what
    /// `--kube-reserved`, `--system-reserved` and the hard eviction thresholds must say for
    /// the node's allocatable to be [`InstanceType::allocatable`].
    ///
    /// With [`Overhead::Aws`]: kube-reserved is AWS's cpu tiers, `11 * pods + 255` MiB of memory
    /// and 1 GiB of ephemeral storage, each replaced by the provisioner's `kubeReserved`; the
    /// hard eviction thresholds are `memory.available` 100Mi and `nodefs.available` 10 %,
    /// replaced by the provisioner's `evictionHard`. A fixed overhead is all kube-reserved.
    pub fn reservations(&self, kubelet: Option<&KubeletConfiguration>) -> Reservations {
        let cap = self.capacity_for(kubelet);
        let mut system = ResourceList::new();
        if let Some(k) = kubelet {
            for (r, q) in &k.system_reserved {
                if let Ok(v) = q.milli() {
                    *system.entry(r.clone()).or_insert(0) += v;
                }
            }
        }
        let (kube, evict) = match &self.overhead {
            Overhead::Fixed(o) => (o.clone(), ResourceList::new()),
            Overhead::Aws => {
                let pods = cap.get(PODS).copied().unwrap_or(0) / 1000;
                let mut kube = ResourceList::new();
                kube.insert(CPU.into(), aws_kube_reserved_cpu_milli(self.vcpus()));
                kube.insert(MEMORY.into(), (11 * pods + 255) * MIB);
                kube.insert(EPHEMERAL_STORAGE.into(), 1024 * MIB);
                if let Some(k) = kubelet {
                    for (r, q) in &k.kube_reserved {
                        if let Ok(v) = q.milli() {
                            kube.insert(r.clone(), v);
                        }
                    }
                }
                let mut evict = ResourceList::new();
                evict.insert(MEMORY.into(), 100 * MIB);
                let storage = cap.get(EPHEMERAL_STORAGE).copied().unwrap_or(0);
                evict.insert(EPHEMERAL_STORAGE.into(), storage / 10);
                if let Some(k) = kubelet {
                    for (signal, value) in &k.eviction_hard {
                        let Some(resource) = eviction_signal_resource(signal) else {
                            continue;
                        };
                        let c = cap.get(resource).copied().unwrap_or(0);
                        if let Some(v) = eviction_threshold_milli(value, c) {
                            evict.insert(resource.into(), v);
                        }
                    }
                }
                (kube, evict)
            }
        };
        Reservations {
            kube_reserved: kube,
            system_reserved: system,
            eviction_hard: evict,
        }
    }

    /// Allocatable = capacity - overhead, per provisioner kubelet settings, never negative.
    pub fn allocatable(&self, kubelet: Option<&KubeletConfiguration>) -> ResourceList {
        let mut cap = self.capacity_for(kubelet);
        for (k, v) in self.overhead_for(kubelet) {
            if let Some(c) = cap.get_mut(&k) {
                *c = (*c - v).max(0);
            }
        }
        cap
    }

    /// The cheapest known price among available offerings matching the requirements.
    pub fn cheapest_price(&self, reqs: &Requirements, capacity_type: Option<&str>) -> Option<f64> {
        let filter = OfferingFilter::new(reqs);
        self.offerings
            .iter()
            .filter(|o| o.available && filter.allows(o))
            .filter(|o| capacity_type.is_none_or(|c| c == o.capacity_type))
            .filter_map(|o| o.price)
            .min_by(f64::total_cmp)
    }

    /// Whether an available offering matches the requirements (zone, capacity type).
    pub fn has_offering(&self, reqs: &Requirements, capacity_type: Option<&str>) -> bool {
        let filter = OfferingFilter::new(reqs);
        self.offerings.iter().any(|o| {
            o.available && filter.allows(o) && capacity_type.is_none_or(|c| c == o.capacity_type)
        })
    }

    /// Whether the type's labels intersect the requirements and an offering is allowed.
    pub fn compatible(&self, reqs: &Requirements) -> bool {
        self.requirements.intersects(reqs).is_ok() && self.has_offering(reqs, None)
    }
}

/// The label keys that some types of a catalog define and others may lack: every type's
/// label keys except the architecture and the instance type, which all types carry.
pub fn optional_label_keys<'a>(
    types: impl IntoIterator<Item = &'a InstanceType>,
) -> BTreeSet<&'a str> {
    let mut keys = Vec::new();
    for t in types {
        union_sorted(&mut keys, t.labels.keys().map(String::as_str));
    }
    keys.retain(|k| !matches!(*k, labels::ARCH | labels::INSTANCE_TYPE));
    keys.into_iter().collect()
}

/// Adds to the sorted, deduplicated `acc` the keys of an ascending sequence (a `BTreeMap`'s
/// keys). The types of a catalog repeat a few dozen keys thousands of times: a list that
/// already holds them all is checked in one ordered walk, one comparison per key, and grows
/// only when a key is new.
pub fn union_sorted<'a>(acc: &mut Vec<&'a str>, keys: impl Iterator<Item = &'a str>) {
    let mut at = 0;
    let mut missing: Vec<&'a str> = Vec::new();
    'keys: for k in keys {
        while let Some(have) = acc.get(at) {
            match (*have).cmp(k) {
                std::cmp::Ordering::Less => at += 1,
                std::cmp::Ordering::Equal => {
                    at += 1;
                    continue 'keys;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        missing.push(k);
    }
    if !missing.is_empty() {
        acc.extend(missing);
        acc.sort_unstable();
        acc.dedup();
    }
}

/// States, on each type of a catalog, that the labels other types define and it lacks are
/// absent (`DoesNotExist`), as Karpenter's cloud providers do; otherwise `Exists` on, say, a
/// GPU label would match the types without GPUs. The engine adds these itself to the types a
/// provisioner may use; a catalog that carries them already spares it a copy of each type
/// every round. Adding them again changes nothing.
pub fn mark_absent_labels(types: &mut [InstanceType]) {
    let keys: Vec<String> = optional_label_keys(types.iter())
        .into_iter()
        .map(str::to_string)
        .collect();
    for t in types {
        for k in &keys {
            if !t.requirements.has_key(k) {
                t.requirements.add(k, ValueSet::does_not_exist());
            }
        }
    }
}

/// What a node reserves, per kubelet setting (milli-units per resource).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    /// `--kube-reserved`.
    pub kube_reserved: ResourceList,
    /// `--system-reserved`.
    pub system_reserved: ResourceList,
    /// The hard eviction thresholds, as resources (`memory.available` is memory,
    /// `nodefs.available` ephemeral storage).
    pub eviction_hard: ResourceList,
}

/// The resource a hard eviction signal reserves from allocatable: `memory.available` memory,
/// `nodefs.available` ephemeral storage; other signals reserve nothing.
pub fn eviction_signal_resource(signal: &str) -> Option<&'static str> {
    match signal {
        "memory.available" => Some(MEMORY),
        "nodefs.available" => Some(EPHEMERAL_STORAGE),
        _ => None,
    }
}

/// An eviction threshold (`100Mi` or `10%` of `capacity`) in milli-units; percentages round up.
pub fn eviction_threshold_milli(value: &str, capacity: i64) -> Option<i64> {
    match value.trim().strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<f64>()
            .ok()
            .map(|p| ((capacity as f64) * p / 100.0).ceil() as i64),
        None => parse_milli(value).ok(),
    }
}

/// Whether an offering's zone and capacity type are allowed.
pub fn offering_allowed(o: &Offering, reqs: &Requirements) -> bool {
    OfferingFilter::new(reqs).allows(o)
}

/// The zone and capacity-type requirements, looked up once to check many offerings.
#[derive(Debug, Clone, Copy)]
pub struct OfferingFilter<'a> {
    zone: Option<&'a ValueSet>,
    capacity_type: Option<&'a ValueSet>,
}

impl<'a> OfferingFilter<'a> {
    /// The filter of a set of requirements.
    pub fn new(reqs: &'a Requirements) -> Self {
        Self {
            zone: reqs.get(labels::ZONE),
            capacity_type: reqs.get(labels::CAPACITY_TYPE),
        }
    }

    /// [`offering_allowed`] under these requirements.
    pub fn allows(&self, o: &Offering) -> bool {
        self.zone.is_none_or(|s| s.has(&o.zone))
            && self.capacity_type.is_none_or(|s| s.has(&o.capacity_type))
    }
}

const MIB: i64 = 1024 * 1024 * 1000;

/// AWS's tiered kube-reserved cpu: 6% of the first core, 1% of the second, 0.5% of the third
/// and fourth, 0.25% of the rest (milli-cpu).
pub fn aws_kube_reserved_cpu_milli(vcpus: i64) -> i64 {
    let mut m = 0.0f64;
    for core in 0..vcpus.max(0) {
        m += match core {
            0 => 60.0,
            1 => 10.0,
            2 | 3 => 5.0,
            _ => 2.5,
        };
    }
    m.round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(cpu: i64, mem_mib: i64, pods: i64) -> InstanceType {
        let mut cap = ResourceList::new();
        cap.insert(CPU.into(), cpu * 1000);
        cap.insert(MEMORY.into(), mem_mib * MIB);
        cap.insert(PODS.into(), pods * 1000);
        InstanceType::new(
            "x",
            "amd64",
            &["linux".into()],
            cap,
            Overhead::Aws,
            BTreeMap::new(),
            vec![],
        )
    }

    #[test]
    fn kube_reserved_cpu_tiers() {
        assert_eq!(aws_kube_reserved_cpu_milli(1), 60);
        assert_eq!(aws_kube_reserved_cpu_milli(2), 70);
        assert_eq!(aws_kube_reserved_cpu_milli(4), 80);
        assert_eq!(aws_kube_reserved_cpu_milli(8), 90);
        assert_eq!(aws_kube_reserved_cpu_milli(96), 310);
    }

    #[test]
    fn aws_allocatable() {
        let t = aws(2, 7578, 29);
        let a = t.allocatable(None);
        assert_eq!(a[CPU], 1930);
        assert_eq!(a[MEMORY], (7578 - (11 * 29 + 255) - 100) * MIB);
        let k = KubeletConfiguration {
            max_pods: Some(110),
            ..Default::default()
        };
        assert_eq!(t.allocatable(Some(&k))[PODS], 110_000);
        let k = KubeletConfiguration {
            max_pods: Some(110),
            pods_per_core: Some(4),
            ..Default::default()
        };
        assert_eq!(t.allocatable(Some(&k))[PODS], 8000);
    }

    proptest::proptest! {
        /// Folding sorted key sets into one list gives their sorted union.
        #[test]
        fn union_sorted_is_the_sorted_union(
            sets in proptest::collection::vec(
                proptest::collection::btree_set("[a-d]{0,2}", 0..6),
                0..6,
            )
        ) {
            let mut acc = Vec::new();
            for set in &sets {
                union_sorted(&mut acc, set.iter().map(String::as_str));
            }
            let want: Vec<&str> = sets.iter().flatten().map(String::as_str).collect::<BTreeSet<_>>().into_iter().collect();
            proptest::prop_assert_eq!(acc, want);
        }
    }
}
