//! The in-memory cloud provider for the simulator and tests: the built-in AWS catalog and
//! prices, instant launches, deterministic instance IDs (`i-00000000000000001`, ...).
//!
//! Capacity errors can be injected per offering with [`SimProvider::exhaust`]; they behave like
//! EC2's `InsufficientInstanceCapacity`: the offering is marked unavailable for 3 minutes and the
//! launch moves on to the next option.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::api::labels::{CAPACITY_TYPE_ON_DEMAND, CAPACITY_TYPE_SPOT};
use crate::api::Provisioner;
use crate::scheduling::InstanceType;

use super::instance_types::{builtin_us_east_1, AwsCatalogOptions};
use super::provider::{
    cluster_tag_key, lock, Clock, CloudError, CloudProvider, Instance, InstanceState, NodeRequest,
    OfferingKey, UnavailableOfferings, CLIENT_TOKEN_TAG, PROVISIONER_TAG,
};

/// Most instance-type options one launch considers (as CreateFleet allows).
const MAX_OPTIONS: usize = 60;

/// An in-memory [`CloudProvider`].
#[derive(Debug)]
pub struct SimProvider {
    cluster: String,
    types: Arc<[InstanceType]>,
    unavailable: UnavailableOfferings,
    state: Mutex<SimState>,
}

#[derive(Debug, Default)]
struct SimState {
    next_id: u64,
    instances: BTreeMap<String, Instance>,
    by_token: HashMap<String, String>,
    exhausted: HashSet<OfferingKey>,
    launches: usize,
}

// === impl SimProvider ===

impl SimProvider {
    /// A provider over the built-in us-east-1 catalog.
    pub fn new(
        cluster: &str,
        clock: Arc<dyn Clock>,
        options: &AwsCatalogOptions,
    ) -> Result<Self, CloudError> {
        Ok(Self::with_instance_types(
            cluster,
            clock,
            builtin_us_east_1(options)?,
        ))
    }

    /// A provider over the given instance types.
    pub fn with_instance_types(
        cluster: &str,
        clock: Arc<dyn Clock>,
        types: Vec<InstanceType>,
    ) -> Self {
        Self {
            cluster: cluster.to_string(),
            types: types.into(),
            unavailable: UnavailableOfferings::new(clock),
            state: Mutex::new(SimState::default()),
        }
    }

    /// Makes an offering return insufficient capacity on every launch until [`Self::restore`].
    pub fn exhaust(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        lock(&self.state).exhausted.insert((
            instance_type.to_string(),
            zone.to_string(),
            capacity_type.to_string(),
        ));
    }

    /// Gives an exhausted offering its capacity back.
    pub fn restore(&self, instance_type: &str, zone: &str, capacity_type: &str) {
        lock(&self.state).exhausted.remove(&(
            instance_type.to_string(),
            zone.to_string(),
            capacity_type.to_string(),
        ));
    }

    /// Adds an instance that does not carry our cluster tag (someone else's).
    pub fn add_foreign_instance(&self, id: &str, instance_type: &str, zone: &str) {
        lock(&self.state).instances.insert(
            id.to_string(),
            Instance {
                id: id.to_string(),
                instance_type: instance_type.to_string(),
                zone: zone.to_string(),
                capacity_type: CAPACITY_TYPE_ON_DEMAND.to_string(),
                state: InstanceState::Running,
                private_dns_name: String::new(),
                image_id: String::new(),
                tags: BTreeMap::new(),
            },
        );
    }

    /// How many instances were launched so far.
    pub fn launches(&self) -> usize {
        lock(&self.state).launches
    }

    fn owns(&self, instance: &Instance) -> bool {
        instance
            .tags
            .get(&cluster_tag_key(&self.cluster))
            .is_some_and(|v| v == "owned")
    }

    /// The candidate (type, zone, capacity type) triples for a request, in launch order.
    fn candidates(&self, request: &NodeRequest) -> Vec<(String, String, String, Option<f64>)> {
        let options: Vec<&InstanceType> = request
            .instance_types
            .iter()
            .take(MAX_OPTIONS)
            .filter_map(|name| self.types.iter().find(|t| &t.name == name))
            .collect();
        let usable = |t: &InstanceType, ct: &str| -> Vec<(String, Option<f64>)> {
            let mut zones: Vec<(String, Option<f64>)> = t
                .offerings
                .iter()
                .filter(|o| o.capacity_type == ct && o.available && request.allows_zone(&o.zone))
                .filter(|o| !self.unavailable.is_unavailable(&t.name, &o.zone, ct))
                .map(|o| (o.zone.clone(), o.price))
                .collect();
            zones.sort_by(|a, b| a.0.cmp(&b.0));
            zones
        };
        let spot = request.allows_capacity_type(CAPACITY_TYPE_SPOT)
            && options
                .iter()
                .any(|t| !usable(t, CAPACITY_TYPE_SPOT).is_empty());
        let ct = if spot {
            CAPACITY_TYPE_SPOT
        } else {
            CAPACITY_TYPE_ON_DEMAND
        };
        if !request.allows_capacity_type(ct) {
            return Vec::new();
        }
        options
            .iter()
            .flat_map(|t| {
                usable(t, ct)
                    .into_iter()
                    .map(|(zone, price)| (t.name.clone(), zone, ct.to_string(), price))
            })
            .collect()
    }
}

impl CloudProvider for SimProvider {
    async fn instance_types(&self, _: &Provisioner) -> Result<Arc<[InstanceType]>, CloudError> {
        if !self.unavailable.any() {
            return Ok(self.types.clone());
        }
        let mut types = self.types.to_vec();
        self.unavailable.apply(&mut types);
        Ok(types.into())
    }

    async fn create(&self, request: &NodeRequest) -> Result<Instance, CloudError> {
        if let Some(existing) = {
            let state = lock(&self.state);
            state
                .by_token
                .get(&request.client_token)
                .and_then(|id| state.instances.get(id))
                .cloned()
        } {
            return Ok(existing);
        }
        let mut tried = BTreeSet::new();
        loop {
            let candidates = self.candidates(request);
            let Some((name, zone, ct, _)) = candidates.into_iter().next() else {
                return Err(if tried.is_empty() {
                    CloudError::NoOfferings(format!(
                        "none of {:?} has an available offering in zones {:?} for capacity types {:?}",
                        request.instance_types, request.zones, request.capacity_types
                    ))
                } else {
                    CloudError::InsufficientCapacity {
                        instance_types: tried.into_iter().collect(),
                        detail: "InsufficientInstanceCapacity".into(),
                    }
                });
            };
            let mut state = lock(&self.state);
            if state
                .exhausted
                .contains(&(name.clone(), zone.clone(), ct.clone()))
            {
                drop(state);
                self.unavailable.mark(&name, &zone, &ct);
                tried.insert(name);
                continue;
            }
            state.next_id += 1;
            state.launches += 1;
            let id = format!("i-{:017x}", state.next_id);
            let mut tags = BTreeMap::new();
            tags.insert(cluster_tag_key(&self.cluster), "owned".to_string());
            tags.insert(
                PROVISIONER_TAG.to_string(),
                request
                    .provisioner
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_default(),
            );
            tags.insert(CLIENT_TOKEN_TAG.to_string(), request.client_token.clone());
            tags.insert("Name".to_string(), id.clone());
            let instance = Instance {
                id: id.clone(),
                instance_type: name,
                zone,
                capacity_type: ct,
                state: InstanceState::Running,
                private_dns_name: format!("ip-10-0-0-{}.ec2.internal", state.next_id),
                image_id: "ami-sim".to_string(),
                tags,
            };
            state.instances.insert(id.clone(), instance.clone());
            state.by_token.insert(request.client_token.clone(), id);
            return Ok(instance);
        }
    }

    async fn delete(&self, instance_id: &str) -> Result<(), CloudError> {
        let mut state = lock(&self.state);
        match state.instances.get_mut(instance_id) {
            None => Ok(()),
            Some(i) if !self.owns(i) => Err(CloudError::NotOwned {
                instance_id: instance_id.to_string(),
                cluster: self.cluster.clone(),
            }),
            Some(i) => {
                i.state = InstanceState::Terminated;
                Ok(())
            }
        }
    }

    async fn get(&self, instance_id: &str) -> Result<Option<Instance>, CloudError> {
        Ok(lock(&self.state)
            .instances
            .get(instance_id)
            .filter(|i| self.owns(i))
            .cloned())
    }

    async fn list(&self) -> Result<Vec<Instance>, CloudError> {
        Ok(lock(&self.state)
            .instances
            .values()
            .filter(|i| self.owns(i) && !i.state.is_terminating())
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::ProvisionerSpec;
    use crate::cloud::provider::ManualClock;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn provider() -> (Arc<ManualClock>, SimProvider) {
        let clock = Arc::new(ManualClock::new());
        let sim = SimProvider::new("demo", clock.clone(), &AwsCatalogOptions::default()).unwrap();
        (clock, sim)
    }

    fn request(token: &str, types: &[&str]) -> NodeRequest {
        NodeRequest {
            provisioner: Provisioner::new("default", ProvisionerSpec::default()),
            instance_types: types.iter().map(|s| s.to_string()).collect(),
            capacity_types: [CAPACITY_TYPE_ON_DEMAND.to_string()].into(),
            zones: BTreeSet::new(),
            labels: BTreeMap::new(),
            taints: vec![],
            client_token: token.into(),
        }
    }

    #[test]
    fn launches_are_instant_deterministic_and_tagged() {
        let (_, sim) = provider();
        let i = block_on(sim.create(&request("n1", &["m5.large", "m5.xlarge"]))).unwrap();
        assert_eq!(i.id, "i-00000000000000001");
        assert_eq!(i.instance_type, "m5.large");
        assert_eq!(i.zone, "us-east-1a");
        assert_eq!(i.capacity_type, "on-demand");
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.provisioner(), Some("default"));
        assert_eq!(i.tags["kubernetes.io/cluster/demo"], "owned");
        let j = block_on(sim.create(&request("n2", &["m5.large"]))).unwrap();
        assert_eq!(j.id, "i-00000000000000002");
        assert_eq!(block_on(sim.list()).unwrap().len(), 2);
    }

    #[test]
    fn same_client_token_launches_once() {
        let (_, sim) = provider();
        let a = block_on(sim.create(&request("n1", &["m5.large"]))).unwrap();
        let b = block_on(sim.create(&request("n1", &["m5.large"]))).unwrap();
        assert_eq!(a, b);
        assert_eq!(sim.launches(), 1);
    }

    #[test]
    fn spot_preferred_when_allowed() {
        let (_, sim) = provider();
        let mut r = request("n1", &["m5.large"]);
        r.capacity_types.insert(CAPACITY_TYPE_SPOT.into());
        let i = block_on(sim.create(&r)).unwrap();
        assert_eq!(i.capacity_type, "spot");
    }

    #[test]
    fn insufficient_capacity_falls_back_and_expires() {
        let (clock, sim) = provider();
        let zones = |t: &str| -> Vec<String> {
            let types = block_on(
                sim.instance_types(&Provisioner::new("default", ProvisionerSpec::default())),
            )
            .unwrap();
            let t = types.iter().find(|x| x.name == t).unwrap();
            t.offerings
                .iter()
                .filter(|o| o.capacity_type == "on-demand")
                .map(|o| o.zone.clone())
                .collect()
        };
        for z in zones("m5.large") {
            sim.exhaust("m5.large", &z, "on-demand");
        }
        let i = block_on(sim.create(&request("n1", &["m5.large", "m5.xlarge"]))).unwrap();
        assert_eq!(i.instance_type, "m5.xlarge");
        let types =
            block_on(sim.instance_types(&Provisioner::new("default", ProvisionerSpec::default())))
                .unwrap();
        let m5 = types.iter().find(|t| t.name == "m5.large").unwrap();
        assert!(m5
            .offerings
            .iter()
            .filter(|o| o.capacity_type == "on-demand")
            .all(|o| !o.available));
        let err = block_on(sim.create(&request("n2", &["m5.large"]))).unwrap_err();
        assert!(matches!(err, CloudError::NoOfferings(_)), "{err}");
        clock.advance(Duration::from_secs(181));
        for z in zones("m5.large") {
            sim.restore("m5.large", &z, "on-demand");
        }
        let i = block_on(sim.create(&request("n3", &["m5.large"]))).unwrap();
        assert_eq!(i.instance_type, "m5.large");
    }

    #[test]
    fn all_exhausted_is_insufficient_capacity() {
        let (_, sim) = provider();
        sim.exhaust("m5.large", "us-east-1a", "on-demand");
        let mut r = request("n1", &["m5.large"]);
        r.zones.insert("us-east-1a".into());
        let err = block_on(sim.create(&r)).unwrap_err();
        assert!(
            matches!(err, CloudError::InsufficientCapacity { .. }),
            "{err}"
        );
        assert_eq!(sim.launches(), 0);
    }

    #[test]
    fn delete_terminates_ours_and_refuses_foreign() {
        let (_, sim) = provider();
        let i = block_on(sim.create(&request("n1", &["m5.large"]))).unwrap();
        sim.add_foreign_instance("i-foreign", "m5.large", "us-east-1a");
        let err = block_on(sim.delete("i-foreign")).unwrap_err();
        assert!(matches!(err, CloudError::NotOwned { .. }), "{err}");
        assert_eq!(block_on(sim.get("i-foreign")).unwrap(), None);
        block_on(sim.delete(&i.id)).unwrap();
        block_on(sim.delete(&i.id)).unwrap();
        assert!(block_on(sim.list()).unwrap().is_empty());
        let got = block_on(sim.get(&i.id)).unwrap().unwrap();
        assert_eq!(got.state, InstanceState::Terminated);
    }
}
