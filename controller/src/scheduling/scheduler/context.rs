//! Preparing a round: resource index, provisioners with allocatable per instance type,
//! topology universe, pod classes and topology groups.

use super::*;

// === impl Prepared ===

impl Prepared {
    /// Each provisioner's requirements and compatible types, the absent label keys and the
    /// types' resource names.
    pub(super) fn new(input: &SchedulerInput) -> Self {
        let all_types = || {
            input.instance_types.iter().chain(
                input
                    .instance_types_by_provisioner
                    .values()
                    .flat_map(|v| v.iter()),
            )
        };
        let absent_keys: Vec<String> = optional_label_keys(all_types())
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut resource_names = Vec::new();
        for t in all_types() {
            union_sorted(&mut resource_names, t.capacity.keys().map(String::as_str));
        }
        let type_resources = resource_names.into_iter().map(str::to_string).collect();
        let provs = input
            .provisioners
            .iter()
            .map(|p| {
                let name = p.metadata.name.clone().unwrap_or_default();
                let mut reqs = Requirements::from_api(&p.spec.requirements).map_err(|source| {
                    SchedulingError::Provisioner {
                        provisioner: name.clone(),
                        source,
                    }
                })?;
                for (k, v) in &p.spec.labels {
                    reqs.add(labels::normalize(k), ValueSet::is_in([v.clone()]));
                }
                reqs.add(labels::PROVISIONER_NAME, ValueSet::is_in([name.clone()]));
                let list: &[InstanceType] = match input.instance_types_by_provisioner.get(&name) {
                    Some(list) => list,
                    None => &input.instance_types,
                };
                let compatible: Vec<usize> = list
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| compatible_with_absent(t, &reqs, &absent_keys))
                    .map(|(pos, _)| pos)
                    .collect();
                let mut keys = Vec::new();
                for &pos in &compatible {
                    union_sorted(&mut keys, list[pos].labels.keys().map(String::as_str));
                }
                let kubelet = p.spec.kubelet_configuration.as_ref();
                let sizes = compatible
                    .iter()
                    .map(|&pos| {
                        (
                            list[pos].allocatable(kubelet),
                            list[pos].capacity_for(kubelet),
                        )
                    })
                    .collect();
                Ok(PreparedProv {
                    reqs,
                    compatible,
                    sizes,
                    type_label_keys: keys.into_iter().map(str::to_string).collect(),
                })
            })
            .collect();
        Prepared {
            key: PreparedKey::of(input),
            absent_keys,
            type_resources,
            provs,
        }
    }

    /// Whether this was made from the same provisioners and type lists as `input`'s.
    pub(super) fn fits(&self, input: &SchedulerInput) -> bool {
        let key = &self.key;
        key.no_shared_types
            && input.instance_types.is_empty()
            && key.provisioners.len() == input.provisioners.len()
            && key
                .provisioners
                .iter()
                .zip(&input.provisioners)
                .all(|(k, p)| k.matches(p))
            && key.types.len() == input.instance_types_by_provisioner.len()
            && key
                .types
                .iter()
                .zip(&input.instance_types_by_provisioner)
                .all(|((ka, a), (kb, b))| ka == kb && Arc::ptr_eq(a, b))
    }
}

// === impl PreparedKey ===

impl PreparedKey {
    fn of(input: &SchedulerInput) -> Self {
        PreparedKey {
            provisioners: input.provisioners.iter().map(ProvisionerKey::of).collect(),
            types: input.instance_types_by_provisioner.clone(),
            no_shared_types: input.instance_types.is_empty(),
        }
    }
}

// === impl ProvisionerKey ===

impl ProvisionerKey {
    fn of(p: &Provisioner) -> Self {
        ProvisionerKey {
            name: p.metadata.name.clone(),
            requirements: p.spec.requirements.clone(),
            labels: p.spec.labels.clone(),
            kubelet: p.spec.kubelet_configuration.clone(),
        }
    }

    fn matches(&self, p: &Provisioner) -> bool {
        self.name == p.metadata.name
            && self.requirements == p.spec.requirements
            && self.labels == p.spec.labels
            && self.kubelet == p.spec.kubelet_configuration
    }
}

/// Whether a type, with `DoesNotExist` for the absent keys it lacks, is compatible with the
/// requirements. Adding `DoesNotExist` only narrows a type, so a type ruled out as given stays
/// ruled out and is not copied.
fn compatible_with_absent(t: &InstanceType, reqs: &Requirements, absent_keys: &[String]) -> bool {
    if !t.compatible(reqs) {
        return false;
    }
    if absent_keys.iter().all(|k| t.requirements.has_key(k)) {
        return true;
    }
    let mut marked = t.clone();
    for k in absent_keys {
        if !marked.requirements.has_key(k) {
            marked.requirements.add(k, ValueSet::does_not_exist());
        }
    }
    marked.compatible(reqs)
}

// === impl Ctx ===

impl<'a> Ctx<'a> {
    pub(super) fn build(
        input: &'a SchedulerInput,
        prepared: &'a Prepared,
        infos: &[PodInfo],
        namespaces: &BTreeSet<String>,
    ) -> Result<Self, SchedulingError> {
        // Resource names.
        let mut names: BTreeSet<String> = [
            resources::CPU,
            resources::MEMORY,
            resources::PODS,
            resources::EPHEMERAL_STORAGE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in infos {
            names.extend(i.requests.keys().cloned());
        }
        names.extend(prepared.type_resources.iter().cloned());
        let res_names: Vec<String> = names.into_iter().collect();
        let res_index: HashMap<String, usize> = res_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let n = res_names.len();
        let extended: Vec<usize> = infos
            .iter()
            .flat_map(|i| i.requests.keys())
            .filter(|k| !resources::is_standard(k))
            .filter_map(|k| res_index.get(k).copied())
            .collect::<BTreeSet<usize>>()
            .into_iter()
            .collect();

        // A label that some instance types define and another lacks is absent on the latter
        // (`DoesNotExist`), as Karpenter's cloud providers state it; otherwise `Exists` on,
        // say, a GPU label would match every type without GPUs.
        let absent_keys = &prepared.absent_keys;
        // The absent keys are added only to the types a provisioner may use (cloning the whole
        // catalog for every round was most of a small round's time); a catalog built with
        // `mark_absent_labels` needs no copy at all.
        let with_absent = |t: &mut Cow<'a, InstanceType>| {
            if absent_keys.iter().all(|k| t.requirements.has_key(k)) {
                return;
            }
            let owned = t.to_mut();
            for k in absent_keys {
                if !owned.requirements.has_key(k) {
                    owned.requirements.add(k, ValueSet::does_not_exist());
                }
            }
        };
        let mut types: Vec<Cow<'a, InstanceType>> = Vec::new();
        let mut augmented: Vec<bool> = Vec::new();
        let shared: Vec<usize> = (0..input.instance_types.len()).collect();
        types.extend(input.instance_types.iter().map(Cow::Borrowed));
        augmented.resize(types.len(), false);

        let ds_infos: Vec<(&DaemonSet, PodInfo)> = input
            .daemonsets
            .iter()
            .filter_map(|d| PodInfo::from_pod(&daemonset_pod(d)).ok().map(|i| (d, i)))
            .collect();

        let mut provs = Vec::new();
        for (p, prep) in input.provisioners.iter().zip(&prepared.provs) {
            let name = p.metadata.name.clone().unwrap_or_default();
            let prep = prep.as_ref().map_err(Clone::clone)?;
            let reqs = prep.reqs.clone();
            let type_idx = match input.instance_types_by_provisioner.get(&name) {
                Some(list) => {
                    let start = types.len();
                    types.extend(list.iter().map(Cow::Borrowed));
                    augmented.resize(types.len(), false);
                    (start..types.len()).collect()
                }
                None => shared.clone(),
            };
            // Daemonsets that would land on this provisioner's nodes.
            let ds_for: Vec<&PodInfo> = ds_infos
                .iter()
                .map(|(_, d)| d)
                .filter(|d| p.spec.taints.iter().all(|t| d.tolerates(t)))
                .collect();
            let mut type_list = Vec::new();
            let mut alloc = Vec::new();
            let mut alloc_raw = Vec::new();
            let mut cap = Vec::new();
            // Only the types `Scheduler::new` found compatible (with the absent marks).
            for (ti, (allocatable, capacity)) in prep
                .compatible
                .iter()
                .zip(&prep.sizes)
                .filter_map(|(&pos, size)| type_idx.get(pos).map(|&ti| (ti, size)))
            {
                if !augmented[ti] {
                    with_absent(&mut types[ti]);
                    augmented[ti] = true;
                }
                let t: &InstanceType = &types[ti];
                let raw = dense(allocatable, &res_index, n);
                let mut a = raw.clone();
                // The node's requirements are built only when a DaemonSet may land on it:
                // intersecting for every type was a large part of a round without any.
                if !ds_for.is_empty() {
                    let node_reqs = reqs.intersection(&t.requirements);
                    for d in &ds_for {
                        let ok = node_reqs.compatible(&d.node_selector).is_ok()
                            && (d.required_terms.is_empty()
                                || d.required_terms
                                    .iter()
                                    .any(|r| node_reqs.compatible(r).is_ok()));
                        if ok {
                            let dr = dense(&d.requests, &res_index, n);
                            for (x, y) in a.iter_mut().zip(&dr) {
                                *x -= y;
                            }
                        }
                    }
                }
                type_list.push(ti);
                alloc.push(a);
                alloc_raw.push(raw);
                cap.push(dense(capacity, &res_index, n));
            }
            let limits = p.spec.limits.as_ref().map(|l| {
                let mut v = vec![i64::MAX; n];
                for (k, q) in &l.resources {
                    if let (Some(i), Ok(m)) = (res_index.get(k), q.milli()) {
                        v[*i] = m;
                    }
                }
                v
            });
            let type_label_keys = prep.type_label_keys.clone();
            let blocked = if p.metadata.deletion_timestamp.is_some() {
                Some(Blocked::Deleting)
            } else {
                over_limit(p, limits.as_ref(), &res_index)
            };
            provs.push(Prov {
                type_label_keys,
                has_prefer_no_schedule: p
                    .spec
                    .taints
                    .iter()
                    .any(|t| t.effect == "PreferNoSchedule"),
                name,
                reqs,
                taints: p.spec.taints.clone(),
                types: type_list,
                alloc,
                alloc_raw,
                cap,
                limits,
                existing_used: vec![0; n],
                blocked,
            });
        }
        for e in &input.existing_nodes {
            let node_labels = e.node.metadata.labels.clone().unwrap_or_default();
            if let Some(pn) = node_labels.get(labels::PROVISIONER_NAME) {
                if let Some(p) = provs.iter_mut().find(|p| &p.name == pn) {
                    let capl = resources::parse_list(
                        e.node.status.as_ref().and_then(|s| s.capacity.as_ref()),
                    )
                    .map_err(|source| SchedulingError::Node {
                        node: e.node.metadata.name.clone().unwrap_or_default(),
                        source,
                    })?;
                    let d = dense(&capl, &res_index, n);
                    for (x, y) in p.existing_used.iter_mut().zip(&d) {
                        *x += y;
                    }
                }
            }
        }
        // Usage is the larger of what the nodes in the input hold and what the provisioner's
        // `status.resources` says (a dump may carry the status without every node, and the
        // status counts nodes being deleted, whose instances still run).
        for (prov, p) in provs.iter_mut().zip(&input.provisioners) {
            let Some(status) = p.status.as_ref() else {
                continue;
            };
            for (name, q) in &status.resources {
                if let (Some(&i), Ok(used)) = (res_index.get(name), q.milli()) {
                    prov.existing_used[i] = prov.existing_used[i].max(used);
                }
            }
        }
        // Existing pods, converted once: for the nodes' used capacity and for topology counts.
        let mut existing_infos: Vec<Vec<PodInfo>> = input
            .existing_nodes
            .iter()
            .map(|e| {
                e.pods
                    .iter()
                    .filter_map(|p| PodInfo::from_pod(p).ok())
                    .collect()
            })
            .collect();
        for info in existing_infos
            .iter_mut()
            .flatten()
            .filter(|i| i.has_namespace_selector())
        {
            info.resolve_namespaces(&input.namespaces, namespaces);
        }
        let (existing_states, notes) = existing_states(
            input,
            &existing_infos,
            &provs,
            &types,
            &ds_infos,
            &res_index,
        )?;
        let mut order: Vec<usize> = (0..provs.len()).collect();
        order.sort_by(|a, b| {
            let wa = input.provisioners[*a].weight();
            let wb = input.provisioners[*b].weight();
            wb.cmp(&wa)
                .then_with(|| provs[*a].name.cmp(&provs[*b].name))
        });

        // Topology universe: domains per key.
        let mut universe: HashMap<String, BTreeSet<String>> = HashMap::new();
        for p in &provs {
            // Every offering names a zone and a capacity type: gathered as borrowed names
            // first, each checked against the requirements once.
            let mut zones: BTreeSet<&str> = BTreeSet::new();
            let mut capacity_types: BTreeSet<&str> = BTreeSet::new();
            for &ti in &p.types {
                for o in &types[ti].offerings {
                    zones.insert(&o.zone);
                    capacity_types.insert(&o.capacity_type);
                }
            }
            for (key, values) in [
                (labels::ZONE, zones),
                (labels::CAPACITY_TYPE, capacity_types),
            ] {
                let allowed: Vec<&str> = values
                    .into_iter()
                    .filter(|v| p.reqs.allows(key, v))
                    .collect();
                if !allowed.is_empty() {
                    universe
                        .entry(key.to_string())
                        .or_default()
                        .extend(allowed.into_iter().map(str::to_string));
                }
            }
            for (k, set) in p.reqs.iter() {
                if !set.complement && k != labels::ZONE && k != labels::CAPACITY_TYPE {
                    universe
                        .entry(k.clone())
                        .or_default()
                        .extend(set.values.iter().cloned());
                }
            }
        }
        for e in &input.existing_nodes {
            for (k, v) in e.node.metadata.labels.iter().flatten() {
                universe
                    .entry(labels::normalize(k).to_string())
                    .or_default()
                    .insert(v.clone());
            }
        }

        // Pod classes: identical scheduling-relevant content shares a class. Classes are
        // found by hash, then compared in full.
        let mut class_of: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut class_info: Vec<usize> = Vec::new();
        let mut pod_class = Vec::with_capacity(infos.len());
        for (i, info) in infos.iter().enumerate() {
            let bucket = class_of.entry(class_hash(info)).or_default();
            let c = match bucket
                .iter()
                .find(|&&c| same_class(&infos[class_info[c]], info))
            {
                Some(&c) => c,
                None => {
                    class_info.push(i);
                    bucket.push(class_info.len() - 1);
                    class_info.len() - 1
                }
            };
            pod_class.push(c);
        }

        // Groups from every term of every class and from existing pods' anti-affinity.
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of: HashMap<(TopologyTerm, bool), usize> = HashMap::new();
        let mut intern = |term: &TopologyTerm, inverse: bool, groups: &mut Vec<Group>| -> usize {
            *group_of.entry((term.clone(), inverse)).or_insert_with(|| {
                groups.push(Group {
                    term: term.clone(),
                    inverse,
                    counts: HashMap::new(),
                    total: 0,
                });
                groups.len() - 1
            })
        };
        let mut classes = Vec::with_capacity(class_info.len());
        for &rep in &class_info {
            let info = &infos[rep];
            let mut term_groups = HashMap::new();
            let mut owns_inverse = Vec::new();
            let all_terms = info
                .required_topology
                .iter()
                .chain(info.soft_spreads.iter())
                .chain(info.preferred_affinity.iter().map(|(_, t)| t))
                .chain(info.preferred_anti_affinity.iter().map(|(_, t)| t));
            for t in all_terms {
                let g = intern(t, false, &mut groups);
                term_groups.insert(t.clone(), g);
            }
            for t in &info.required_topology {
                if t.kind == TermKind::AntiAffinity {
                    owns_inverse.push(intern(t, true, &mut groups));
                }
            }
            let requests = dense(&info.requests, &res_index, n);
            classes.push(Class {
                requested: (0..n).filter(|&r| requests[r] != 0).collect(),
                requests,
                selected_by: Vec::new(),
                inverse_selected_by: Vec::new(),
                owns_inverse,
                term_groups,
                touches_topology: false,
                cache: 0,
            });
        }
        for pods in &existing_infos {
            for p in pods {
                for t in &p.required_topology {
                    if t.kind == TermKind::AntiAffinity {
                        intern(t, true, &mut groups);
                    }
                }
            }
        }
        // Equivalence ids, numbered in order of first appearance: equal shapes with the same
        // group memberships. Found by hash, then compared in full.
        let mut cache_ids: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut next_id = 0;
        for (ci, &rep) in class_info.iter().enumerate() {
            let info = &infos[rep];
            for (gi, g) in groups.iter().enumerate() {
                if g.term.selects(&info.namespace, &info.labels) {
                    if g.inverse {
                        classes[ci].inverse_selected_by.push(gi);
                    } else {
                        classes[ci].selected_by.push(gi);
                    }
                }
            }
            let c = &mut classes[ci];
            c.touches_topology = !c.selected_by.is_empty()
                || !c.inverse_selected_by.is_empty()
                || !c.term_groups.is_empty()
                || !c.owns_inverse.is_empty();
            let mut h = std::hash::DefaultHasher::new();
            shape_hash(info, &mut h);
            (&c.selected_by, &c.inverse_selected_by, &c.owns_inverse).hash(&mut h);
            let bucket = cache_ids.entry(h.finish()).or_default();
            let (head, tail) = classes.split_at_mut(ci);
            let c = &mut tail[0];
            let same = bucket.iter().copied().find(|&other| {
                let o = &head[other];
                o.selected_by == c.selected_by
                    && o.inverse_selected_by == c.inverse_selected_by
                    && o.owns_inverse == c.owns_inverse
                    && same_shape(&infos[class_info[other]], info)
            });
            c.cache = match same {
                Some(other) => head[other].cache,
                None => {
                    bucket.push(ci);
                    next_id += 1;
                    next_id - 1
                }
            };
        }
        // Count existing pods.
        for (ni, (e, pods)) in input.existing_nodes.iter().zip(&existing_infos).enumerate() {
            let node_labels = normalized_labels(&e.node);
            let name = node_labels
                .get(labels::HOSTNAME)
                .cloned()
                .unwrap_or_else(|| existing_name(e, ni));
            let taints = api_taints(&e.node);
            // Whether each group counts this node's pods (its term's policies).
            let counts_here: Vec<bool> = groups
                .iter()
                .map(|g| {
                    g.term
                        .counted_nodes
                        .as_ref()
                        .is_none_or(|c| c.includes(&node_labels, &taints))
                })
                .collect();
            for p in pods {
                for (g, _) in groups.iter_mut().zip(&counts_here).filter(|(_, c)| **c) {
                    let domain = if g.term.key == labels::HOSTNAME {
                        Some(name.clone())
                    } else {
                        node_labels.get(&g.term.key).cloned()
                    };
                    let Some(d) = domain else { continue };
                    let hit = if g.inverse {
                        p.required_topology.contains(&g.term)
                    } else {
                        g.term.selects(&p.namespace, &p.labels)
                    };
                    if hit {
                        *g.counts.entry(d).or_insert(0) += 1;
                        g.total += 1;
                    }
                }
            }
        }

        Ok(Ctx {
            options: &input.options,
            res_names,
            res_index,
            extended,
            types,
            provs,
            order,
            classes,
            pod_class,
            universe,
            groups_init: groups,
            existing_states,
            node_domains: input
                .existing_nodes
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut l = normalized_labels(&e.node);
                    l.entry(labels::HOSTNAME.to_string())
                        .or_insert_with(|| existing_name(e, i));
                    (l, api_taints(&e.node))
                })
                .collect(),
            notes,
        })
    }
}

/// Taints the node lifecycle puts on every node that is coming up (Karpenter's known ephemeral
/// taints); they go away on their own, so they keep no pod off an in-flight node.
pub(super) const EPHEMERAL_TAINTS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoSchedule"),
    ("node.kubernetes.io/unreachable", "NoSchedule"),
    (
        "node.cloudprovider.kubernetes.io/uninitialized",
        "NoSchedule",
    ),
];

/// The first resource whose `status.resources` usage already exceeds the provisioner's limit.
fn over_limit(
    p: &Provisioner,
    limits: Option<&Res>,
    res_index: &HashMap<String, usize>,
) -> Option<Blocked> {
    let limits = limits?;
    let status = p.status.as_ref()?;
    for (name, q) in &status.resources {
        let (Some(&i), Ok(used)) = (res_index.get(name), q.milli()) else {
            continue;
        };
        if limits[i] != i64::MAX && used > limits[i] {
            return Some(Blocked::OverLimit {
                resource: name.clone(),
                used,
                limit: limits[i],
            });
        }
    }
    None
}

fn api_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: t.effect.clone(),
                    time_added: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a bound pod is the DaemonSet's own pod.
fn owned_by(pod: &Pod, ds: &DaemonSet) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && Some(o.name.as_str()) == ds.metadata.name.as_deref())
}

/// The existing nodes the packer may fill, and notes on the ones it leaves out.
///
/// Pending pods were already refused by kube-scheduler on the nodes that exist, so only nodes
/// Karpenter owns (`karpenter.sh/provisioner-name`) are filled, never one being deleted or
/// cordoned (`spec.unschedulable`). An
/// initialized node offers the allocatable it reports; a node still coming up (no
/// `karpenter.sh/initialized=true`) offers its instance type's allocatable, less the
/// DaemonSet pods that will land on it but are not bound yet, and its provisioner's
/// `startupTaints` and the ephemeral not-ready taints do not keep pods off it.
fn existing_states(
    input: &SchedulerInput,
    existing_infos: &[Vec<PodInfo>],
    provs: &[Prov],
    types: &[Cow<'_, InstanceType>],
    ds_infos: &[(&DaemonSet, PodInfo)],
    res_index: &HashMap<String, usize>,
) -> Result<(Vec<NodeState>, Vec<String>), SchedulingError> {
    let n = res_index.len();
    let mut states = Vec::new();
    let mut unowned = Vec::new();
    let mut deleting = Vec::new();
    let mut cordoned = Vec::new();
    let mut no_capacity = Vec::new();
    for (i, e) in input.existing_nodes.iter().enumerate() {
        let name = existing_name(e, i);
        let node_labels = normalized_labels(&e.node);
        let Some(prov_name) = node_labels.get(labels::PROVISIONER_NAME) else {
            unowned.push(name);
            continue;
        };
        if e.node.metadata.deletion_timestamp.is_some() {
            deleting.push(name);
            continue;
        }
        if e.node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
        {
            cordoned.push(name);
            continue;
        }
        let node_err = |source| SchedulingError::Node {
            node: name.clone(),
            source,
        };
        let in_flight = node_labels
            .get(labels::NODE_INITIALIZED)
            .is_none_or(|v| v != "true");
        let prov_i = provs.iter().position(|p| &p.name == prov_name);
        let spec = prov_i.map(|pi| &input.provisioners[pi].spec);
        let reported = e
            .node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .filter(|a| !a.is_empty());
        let type_alloc = || {
            let it = node_labels.get(labels::INSTANCE_TYPE)?;
            let by_name = |t: &usize| types[*t].name == *it;
            let t = prov_i
                .and_then(|pi| provs[pi].types.iter().copied().find(by_name))
                .or_else(|| (0..types.len()).find(by_name))?;
            Some(types[t].allocatable(spec.and_then(|s| s.kubelet_configuration.as_ref())))
        };
        let alloc = match (in_flight, reported) {
            (true, r) => match type_alloc() {
                Some(a) => a,
                None => match r {
                    Some(r) => resources::parse_list(Some(r)).map_err(node_err)?,
                    None => {
                        no_capacity.push(name);
                        continue;
                    }
                },
            },
            (false, Some(r)) => resources::parse_list(Some(r)).map_err(node_err)?,
            (false, None) => {
                no_capacity.push(name);
                continue;
            }
        };
        let mut taints = api_taints(&e.node);
        if in_flight {
            let startup = spec
                .map(|s| s.startup_taints.as_slice())
                .unwrap_or_default();
            taints.retain(|t| {
                !startup
                    .iter()
                    .any(|s| s.key == t.key && s.effect == t.effect)
                    && !EPHEMERAL_TAINTS
                        .iter()
                        .any(|(k, eff)| *k == t.key && *eff == t.effect)
            });
        }
        let mut used = vec![0; n];
        let mut ports = Vec::new();
        for info in existing_infos.get(i).into_iter().flatten() {
            let d = dense(&info.requests, res_index, n);
            for (x, y) in used.iter_mut().zip(&d) {
                *x += y;
            }
            ports.extend(info.host_ports.iter().cloned());
        }
        let mut labels_h = node_labels;
        labels_h
            .entry(labels::HOSTNAME.to_string())
            .or_insert_with(|| name.clone());
        if in_flight {
            // DaemonSet pods that will land on the node but are not bound yet.
            for (ds, d) in ds_infos {
                let lands = taints
                    .iter()
                    .all(|t| t.effect == "PreferNoSchedule" || d.tolerates(t))
                    && d.node_selector.matches_labels(&labels_h)
                    && (d.required_terms.is_empty()
                        || d.required_terms.iter().any(|r| r.matches_labels(&labels_h)));
                if lands && !e.pods.iter().any(|p| owned_by(p, ds)) {
                    let dr = dense(&d.requests, res_index, n);
                    for (x, y) in used.iter_mut().zip(&dr) {
                        *x += y;
                    }
                }
            }
        }
        states.push(NodeState {
            existing: Some(i),
            prov: usize::MAX,
            reqs: Requirements::from_labels(&labels_h),
            name,
            labels: labels_h,
            taints,
            options: Vec::new(),
            used,
            avail: dense(&alloc, res_index, n),
            pods: Vec::new(),
            ports,
            limit_max: Vec::new(),
            floor: Vec::new(),
        });
    }
    let mut notes = Vec::new();
    if !unowned.is_empty() {
        notes.push(format!(
            "left out {} existing node(s) that Karpenter does not own (no {} label): {}; \
             kube-scheduler already considered them for the pending pods",
            unowned.len(),
            labels::PROVISIONER_NAME,
            unowned.join(", ")
        ));
    }
    if !deleting.is_empty() {
        notes.push(format!(
            "left out {} node(s) being deleted: {}",
            deleting.len(),
            deleting.join(", ")
        ));
    }
    if !cordoned.is_empty() {
        notes.push(format!(
            "left out {} cordoned node(s): {}",
            cordoned.len(),
            cordoned.join(", ")
        ));
    }
    if !no_capacity.is_empty() {
        notes.push(format!(
            "left out {} node(s) that report no allocatable resources and are not coming up \
             with a known instance type: {}",
            no_capacity.len(),
            no_capacity.join(", ")
        ));
    }
    Ok((states, notes))
}
