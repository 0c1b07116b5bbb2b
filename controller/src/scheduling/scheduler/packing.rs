//! First-fit-decreasing placement: existing nodes, in-flight nodes, then a new node per
//! provisioner; topology checks and relaxation of preferences.

use super::*;

// === impl State ===

impl State {
    pub(super) fn new(ctx: &Ctx<'_>) -> Result<Self, SchedulingError> {
        let n = ctx.res_names.len();
        let nodes = ctx.existing_states.clone();
        Ok(State {
            nodes,
            groups: ctx
                .groups_init
                .iter()
                .map(|g| Group {
                    term: g.term.clone(),
                    inverse: g.inverse,
                    counts: g.counts.clone(),
                    total: g.total,
                })
                .collect(),
            limit_used: vec![vec![0; n]; ctx.provs.len()],
            dead: HashMap::new(),
            compat: HashMap::new(),
            improve_compat: RefCell::new(HashMap::new()),
            price_tables: RefCell::new(vec![None; ctx.provs.len()]),
            unschedulable: Vec::new(),
            relaxed: Vec::new(),
            new_count: 0,
            domain_cache: RefCell::new(HashMap::new()),
            prov_domain_cache: RefCell::new(HashMap::new()),
            future: Vec::new(),
            seen: RefCell::new(HashMap::new()),
            foreign_cache: RefCell::new(HashMap::new()),
        })
    }

    pub(super) fn run(&mut self, ctx: &Ctx<'_>, infos: &[PodInfo]) {
        let cpu = ctx.res_index[resources::CPU];
        let mem = ctx.res_index[resources::MEMORY];
        let mut order: Vec<usize> = (0..infos.len()).collect();
        order.sort_by(|a, b| {
            let ra = &ctx.classes[ctx.pod_class[*a]].requests;
            let rb = &ctx.classes[ctx.pod_class[*b]].requests;
            rb[cpu]
                .cmp(&ra[cpu])
                .then(rb[mem].cmp(&ra[mem]))
                .then(ctx.pod_class[*a].cmp(&ctx.pod_class[*b]))
                .then(a.cmp(b))
        });
        for p in order {
            self.schedule_pod(ctx, infos, p);
        }
        // Like Karpenter's queue: retry failures while others keep landing (pod affinity to a
        // pod scheduled later in the same round).
        loop {
            let failed = std::mem::take(&mut self.unschedulable);
            if failed.is_empty() {
                break;
            }
            let before = failed.len();
            for (p, _) in failed {
                self.schedule_pod(ctx, infos, p);
            }
            if self.unschedulable.len() >= before {
                break;
            }
        }
    }

    pub(super) fn effective(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        r: &Relax,
    ) -> Effective {
        let mut reqs = info.node_selector.clone();
        if let Some(t) = info.required_terms.get(r.req_term) {
            reqs.add_all(t);
        }
        if let Some((_, t)) = info.preferred_terms.get(r.pref_node) {
            reqs.add_all(t);
        }
        let c = &ctx.classes[class];
        let g = |t: &TopologyTerm| c.term_groups.get(t).copied();
        let terms = info
            .required_topology
            .iter()
            .filter_map(g)
            .chain(info.soft_spreads.iter().skip(r.soft_spread).filter_map(g))
            .chain(
                info.preferred_affinity
                    .iter()
                    .skip(r.pref_aff)
                    .filter_map(|(_, t)| g(t)),
            )
            .chain(
                info.preferred_anti_affinity
                    .iter()
                    .skip(r.pref_anti)
                    .filter_map(|(_, t)| g(t)),
            )
            .collect();
        Effective {
            reqs,
            terms,
            tolerate_prefer: r.prefer_no_schedule,
        }
    }

    /// The next relaxation, in Karpenter's order, with its description.
    pub(super) fn relax(ctx: &Ctx<'_>, info: &PodInfo, r: &mut Relax) -> Option<String> {
        if info.required_terms.len() > r.req_term + 1 {
            r.req_term += 1;
            return Some(format!(
                "required node affinity term {} ({}) removed; trying the next term",
                r.req_term - 1,
                info.required_terms[r.req_term - 1]
            ));
        }
        if let Some((w, t)) = info.preferred_affinity.get(r.pref_aff) {
            r.pref_aff += 1;
            return Some(format!("preferred {} (weight {w}) removed", t.describe()));
        }
        if let Some((w, t)) = info.preferred_anti_affinity.get(r.pref_anti) {
            r.pref_anti += 1;
            return Some(format!("preferred {} (weight {w}) removed", t.describe()));
        }
        if let Some((w, t)) = info.preferred_terms.get(r.pref_node) {
            r.pref_node += 1;
            return Some(format!(
                "preferred node affinity ({t}) (weight {w}) removed"
            ));
        }
        if let Some(t) = info.soft_spreads.get(r.soft_spread) {
            r.soft_spread += 1;
            return Some(format!("ScheduleAnyway {} removed", t.describe()));
        }
        if !r.prefer_no_schedule && ctx.provs.iter().any(|p| p.has_prefer_no_schedule) {
            r.prefer_no_schedule = true;
            return Some("PreferNoSchedule taints tolerated".to_string());
        }
        None
    }

    pub(super) fn schedule_pod(&mut self, ctx: &Ctx<'_>, infos: &[PodInfo], p: usize) {
        let info = &infos[p];
        let class = ctx.pod_class[p];
        let mut relax = Relax::default();
        let mut relaxed = Vec::new();
        loop {
            let eff = self.effective(ctx, info, class, &relax);
            match self.try_place(ctx, info, class, p, &eff, relaxed.len()) {
                Ok(()) => {
                    if !relaxed.is_empty() {
                        self.relaxed.push((p, relaxed));
                    }
                    return;
                }
                Err(fails) => match Self::relax(ctx, info, &mut relax) {
                    Some(what) => relaxed.push(what),
                    None => {
                        self.unschedulable.push((p, fails));
                        return;
                    }
                },
            }
        }
    }

    /// Whether a failure stays a failure as the round goes on (nodes only fill up, topology
    /// counts only grow): then the node is skipped for the same class and relaxation level.
    pub(super) fn permanent(&self, f: &Fail) -> bool {
        match f {
            Fail::Taint(_)
            | Fail::Requirement(_)
            | Fail::NoInstanceType
            | Fail::Resources
            | Fail::HostPorts => true,
            Fail::Limits | Fail::Pinned | Fail::Blocked => false,
            Fail::Topology(g) => {
                let g = &self.groups[*g];
                g.inverse
                    || match g.term.kind {
                        TermKind::AntiAffinity => true,
                        TermKind::Spread { .. } => g.term.key == labels::HOSTNAME,
                        TermKind::Affinity => false,
                    }
            }
        }
    }

    pub(super) fn try_place(
        &mut self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        p: usize,
        eff: &Effective,
        level: usize,
    ) -> Result<(), Vec<(usize, Fail)>> {
        let key = (ctx.classes[class].cache, level);
        let mut dead = self.dead.remove(&key).unwrap_or_default();
        let mut compat = self.compat.remove(&key).unwrap_or_default();
        compat.resize(ctx.provs.len(), None);
        let result = self.try_place_inner(ctx, info, class, p, eff, &mut dead, &mut compat);
        self.compat.insert(key, compat);
        self.dead.insert(key, dead);
        result
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_place_inner(
        &mut self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        p: usize,
        eff: &Effective,
        dead: &mut Vec<u64>,
        compat: &mut [Option<Compat>],
    ) -> Result<(), Vec<(usize, Fail)>> {
        let req = &ctx.classes[class].requests;
        // The first new accelerator node that this pod (which needs no accelerator) would make
        // dearer, with the price increase: taken only when no fresh node holds the pod for
        // less.
        let mut rider: Option<(usize, Update, f64)> = None;
        for i in 0..self.nodes.len() {
            if dead.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0) {
                continue;
            }
            let attempt = if self.nodes[i].existing.is_some() {
                self.try_existing(ctx, info, class, eff, i)
            } else {
                let prov = self.nodes[i].prov;
                let cm = compat[prov]
                    .get_or_insert_with(|| Rc::new(class_compat(ctx, prov, &eff.reqs)))
                    .clone();
                let r = self.try_new(ctx, info, class, eff, &self.nodes[i], &cm, false);
                match r {
                    Ok(u) => match self.ride_increase(ctx, &self.nodes[i], class, &u) {
                        Some(increase) => {
                            if rider.is_none() {
                                rider = Some((i, u, increase));
                            }
                            continue;
                        }
                        None => {
                            self.add_to_new(ctx, i, u, req, info);
                            Ok(())
                        }
                    },
                    Err(f) => Err(f),
                }
            };
            match attempt {
                Ok(()) => {
                    self.commit(ctx, info, class, p, i);
                    return Ok(());
                }
                Err(f) => {
                    if self.permanent(&f) {
                        if dead.len() <= i / 64 {
                            dead.resize(i / 64 + 1, 0);
                        }
                        dead[i / 64] |= 1 << (i % 64);
                    }
                }
            }
        }
        let mut fails = Vec::new();
        for &pi in &ctx.order {
            if ctx.provs[pi].blocked.is_some() {
                fails.push((pi, Fail::Blocked));
                continue;
            }
            let cm = compat[pi]
                .get_or_insert_with(|| Rc::new(class_compat(ctx, pi, &eff.reqs)))
                .clone();
            let mut fresh = self.fresh_node(ctx, pi, None);
            match self.try_new(ctx, info, class, eff, &fresh, &cm, true) {
                Ok(u) => {
                    if let Some((i, ru, increase)) = rider.take() {
                        let reqs = u.reqs.as_ref().unwrap_or(&fresh.reqs);
                        if increase <= self.options_price(ctx, pi, reqs, &u.options) {
                            self.add_to_new(ctx, i, ru, req, info);
                            self.commit(ctx, info, class, p, i);
                            return Ok(());
                        }
                    }
                    self.account_limits(ctx, pi, &fresh.limit_max, &u.limit_max);
                    apply(&mut fresh, u, req, info);
                    fresh.name = format!("new-{}", self.new_count);
                    self.new_count += 1;
                    self.nodes.push(fresh);
                    let i = self.nodes.len() - 1;
                    self.commit(ctx, info, class, p, i);
                    return Ok(());
                }
                Err(f) => fails.push((pi, f)),
            }
        }
        if let Some((i, u, _)) = rider {
            self.add_to_new(ctx, i, u, req, info);
            self.commit(ctx, info, class, p, i);
            return Ok(());
        }
        Err(fails)
    }

    /// Applies an update to new node `i`, keeping the limits' in-flight usage in step.
    fn add_to_new(&mut self, ctx: &Ctx<'_>, i: usize, u: Update, req: &[i64], info: &PodInfo) {
        let old = std::mem::take(&mut self.nodes[i].limit_max);
        self.account_limits(ctx, self.nodes[i].prov, &old, &u.limit_max);
        apply(&mut self.nodes[i], u, req, info);
    }

    /// How much adding a pod that requests no extended resource (GPU, accelerator) raises the
    /// price of a new node planned for pods that do; `None` when it does not (or the rule does
    /// not apply). Spare room on such a node is free, but narrowing it to a larger accelerator
    /// type often costs more than an ordinary node for the pod.
    fn ride_increase(
        &self,
        ctx: &Ctx<'_>,
        node: &NodeState,
        class: usize,
        u: &Update,
    ) -> Option<f64> {
        if ctx.extended.is_empty() || node.existing.is_some() {
            return None;
        }
        let req = &ctx.classes[class].requests;
        if ctx.extended.iter().any(|&r| req[r] > 0)
            || !ctx.extended.iter().any(|&r| node.used[r] > 0)
        {
            return None;
        }
        // Same options under the same requirements: the same price.
        if u.reqs.is_none() && u.options.len() == node.options.len() {
            return None;
        }
        let reqs = u.reqs.as_ref().unwrap_or(&node.reqs);
        let increase =
            self.options_price(ctx, node.prov, reqs, &u.options) - self.node_price(ctx, node);
        (increase > 1e-9).then_some(increase)
    }

    /// An empty new node of a provisioner, optionally restricted to some options.
    pub(super) fn fresh_node(
        &self,
        ctx: &Ctx<'_>,
        pi: usize,
        options: Option<&[usize]>,
    ) -> NodeState {
        let prov = &ctx.provs[pi];
        NodeState {
            existing: None,
            prov: pi,
            name: String::new(),
            reqs: prov.reqs.clone(),
            labels: BTreeMap::new(),
            taints: prov.taints.clone(),
            options: options.map_or_else(|| (0..prov.types.len()).collect(), <[usize]>::to_vec),
            used: vec![0; ctx.res_names.len()],
            avail: Vec::new(),
            pods: Vec::new(),
            ports: Vec::new(),
            limit_max: vec![0; ctx.res_names.len()],
            floor: Vec::new(),
        }
    }

    pub(super) fn try_existing(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        eff: &Effective,
        i: usize,
    ) -> Result<(), Fail> {
        let node = &self.nodes[i];
        check_taints(&node.taints, info, eff.tolerate_prefer)?;
        if !eff.reqs.matches_labels(&node.labels) {
            return Err(Fail::Requirement(String::new()));
        }
        if info.host_ports_conflict(&node.ports) {
            return Err(Fail::HostPorts);
        }
        if !fits(&node.used, &ctx.classes[class].requests, &node.avail) {
            return Err(Fail::Resources);
        }
        let mut reqs = node.reqs.clone();
        self.check_topology(ctx, info, class, eff, node, &mut reqs, None)
    }

    /// Tries to add the pod to a new (or in-flight) node; returns how the node changes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_new(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        eff: &Effective,
        node: &NodeState,
        compat: &[bool],
        fresh: bool,
    ) -> Result<Update, Fail> {
        let prov = &ctx.provs[node.prov];
        check_taints(&prov.taints, info, eff.tolerate_prefer)?;
        if let Err(k) = node
            .reqs
            .compatible_with(&eff.reqs, |k| prov.type_label_keys.contains(k))
        {
            return Err(Fail::Requirement(k.to_string()));
        }
        if info.host_ports_conflict(&node.ports) {
            return Err(Fail::HostPorts);
        }
        // Topology on fixed domains (hostname, pinned keys) before the costlier option scan.
        if !eff.terms.is_empty() || !ctx.classes[class].inverse_selected_by.is_empty() {
            let mut scratch = node.reqs.clone();
            self.check_topology(ctx, info, class, eff, node, &mut scratch, Some(None))?;
        }
        let req = &ctx.classes[class].requests;
        let requested = &ctx.classes[class].requested;
        let mut reqs: Option<Requirements> = None;
        if !eff.reqs.is_empty() {
            let mut r = node.reqs.clone();
            r.add_all(&eff.reqs);
            if r != node.reqs {
                reqs = Some(r);
            }
        }
        let mut any_compat = false;
        let mut options: Vec<usize> = Vec::with_capacity(node.options.len());
        // Every option holds `used`; when the options' floor holds this pod too, every option
        // fits and, with nothing narrowing the requirements, stays: no scan.
        let within_floor = !node.floor.is_empty()
            && requested
                .iter()
                .all(|&r| node.used[r] + req[r] <= node.floor[r]);
        let mut floor: Res;
        if within_floor && reqs.is_none() && node.options.iter().all(|&o| compat[o]) {
            any_compat = !node.options.is_empty();
            options.extend_from_slice(&node.options);
            floor = node.floor.clone();
        } else {
            floor = vec![i64::MAX; ctx.res_names.len()];
            for &o in &node.options {
                if !compat[o] {
                    continue;
                }
                if let (Some(r), false) = (&reqs, fresh) {
                    if !ctx.types[prov.types[o]].compatible(r) {
                        continue;
                    }
                }
                any_compat = true;
                let alloc = &prov.alloc[o];
                let fit = if !node.floor.is_empty() {
                    fits_requested(&node.used, req, alloc, requested)
                } else {
                    fits_all(&node.used, req, alloc)
                };
                if fit {
                    options.push(o);
                    for (f, a) in floor.iter_mut().zip(alloc) {
                        *f = (*f).min(*a);
                    }
                }
            }
        }
        if !any_compat {
            return Err(Fail::NoInstanceType);
        }
        if options.is_empty() {
            return Err(Fail::Resources);
        }
        if !eff.terms.is_empty() || !ctx.classes[class].inverse_selected_by.is_empty() {
            let mut r = reqs.clone().unwrap_or_else(|| node.reqs.clone());
            let before = r.clone();
            self.check_topology(
                ctx,
                info,
                class,
                eff,
                node,
                &mut r,
                Some(Some((prov, &options))),
            )?;
            if r != before {
                options.retain(|&o| ctx.types[prov.types[o]].compatible(&r));
                if options.is_empty() {
                    return Err(Fail::Pinned);
                }
                reqs = Some(r);
            }
        }
        if let Some(limits) = &prov.limits {
            let in_flight = &self.limit_used[node.prov];
            // This node's current contribution is replaced by the new one.
            options.retain(|&o| {
                prov.cap[o].iter().enumerate().all(|(r, c)| {
                    limits[r] == i64::MAX
                        || prov.existing_used[r] + in_flight[r] - node.limit_max[r] + c <= limits[r]
                })
            });
            if options.is_empty() {
                return Err(Fail::Limits);
            }
        }
        let mut limit_max = vec![0; ctx.res_names.len()];
        if prov.limits.is_some() {
            for &o in &options {
                for (m, c) in limit_max.iter_mut().zip(&prov.cap[o]) {
                    *m = (*m).max(*c);
                }
            }
        }
        Ok(Update {
            reqs,
            options,
            limit_max,
            floor,
        })
    }

    pub(super) fn domain_of(node: &NodeState, reqs: &Requirements, key: &str) -> Option<String> {
        if node.existing.is_some() {
            return node.labels.get(key).cloned();
        }
        if key == labels::HOSTNAME {
            return Some(node.name.clone());
        }
        reqs.get(key).and_then(|s| s.single()).map(str::to_string)
    }

    /// Checks (and for new nodes narrows) topology domains. `new` is `None` for existing
    /// nodes, `Some(None)` for a pre-check that skips unpinned keys, and `Some(Some(..))` with
    /// the node's remaining options for the full check.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_topology(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        eff: &Effective,
        node: &NodeState,
        reqs: &mut Requirements,
        new: Option<Option<(&Prov, &[usize])>>,
    ) -> Result<(), Fail> {
        let c = &ctx.classes[class];
        let checks = eff
            .terms
            .iter()
            .map(|g| (*g, false))
            .chain(c.inverse_selected_by.iter().map(|g| (*g, true)));
        for (gi, inverse) in checks {
            let g = &self.groups[gi];
            let key = g.term.key.as_str();
            let spread_min = match g.term.kind {
                TermKind::Spread { .. } if !inverse && key != labels::HOSTNAME => {
                    self.spread_min(ctx, info, class, eff, gi)
                }
                _ => 0,
            };
            let allowed = |d: &str| -> bool {
                let n = g.count(d);
                if inverse {
                    return n == 0;
                }
                match g.term.kind {
                    TermKind::AntiAffinity => n == 0,
                    TermKind::Affinity => {
                        n > 0 || (g.total == 0 && g.term.selects(&info.namespace, &info.labels))
                    }
                    TermKind::Spread { max_skew } => {
                        if key == labels::HOSTNAME {
                            return n < max_skew;
                        }
                        n < spread_min + max_skew
                    }
                }
            };
            if node.existing.is_none() && key == labels::HOSTNAME {
                if !allowed(&node.name) {
                    return Err(Fail::Topology(gi));
                }
                continue;
            }
            if let Some(d) = Self::domain_of(node, reqs, key) {
                if !allowed(&d) {
                    return Err(Fail::Topology(gi));
                }
                continue;
            }
            let (prov, options) = match new {
                None => return Err(Fail::Topology(gi)),
                Some(None) => continue,
                Some(Some(x)) => x,
            };
            if !reqs.has_key(key) && key != labels::ZONE && key != labels::CAPACITY_TYPE {
                return Err(Fail::Topology(gi));
            }
            let mut candidates: Vec<&String> = ctx
                .universe
                .get(key)
                .into_iter()
                .flatten()
                .filter(|d| reqs.allows(key, d) && allowed(d))
                .collect();
            if key == labels::ZONE || key == labels::CAPACITY_TYPE {
                let filter = crate::scheduling::instance_type::OfferingFilter::new(reqs);
                candidates.retain(|d| {
                    options.iter().any(|&o| {
                        ctx.types[prov.types[o]].offerings.iter().any(|of| {
                            of.available
                                && filter.allows(of)
                                && (if key == labels::ZONE {
                                    &of.zone
                                } else {
                                    &of.capacity_type
                                }) == *d
                        })
                    })
                });
            }
            let pick = match g.term.kind {
                TermKind::Affinity if !inverse => candidates
                    .iter()
                    .max_by(|a, b| g.count(a).cmp(&g.count(b)).then(b.cmp(a)))
                    .copied(),
                _ => candidates
                    .iter()
                    .min_by(|a, b| g.count(a).cmp(&g.count(b)).then(a.cmp(b)))
                    .copied(),
            };
            match pick {
                Some(d) => reqs.add(key, ValueSet::is_in([d.clone()])),
                None => return Err(Fail::Topology(gi)),
            }
        }
        Ok(())
    }

    /// The domains a pod's spread term is spread over, as kube-scheduler sees them: those a
    /// provisioner the pod can use offers (its taints tolerated, its requirements compatible
    /// with the pod's node selector and required affinity, an instance type left), and those of
    /// existing nodes (any owner) that pass the term's `nodeAffinityPolicy` (default Honor) and
    /// `nodeTaintsPolicy` (default Ignore). Cached per pod shape, term and relaxation.
    pub(super) fn spread_domains(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        eff: &Effective,
        gi: usize,
    ) -> Rc<Vec<String>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (ctx.classes[class].cache, gi, &eff.reqs, eff.tolerate_prefer).hash(&mut h);
        let id = h.finish();
        if let Some(d) = self.domain_cache.borrow().get(&id) {
            return d.clone();
        }
        let term = &self.groups[gi].term;
        let key = term.key.as_str();
        let mut out: BTreeSet<String> = BTreeSet::new();
        for prov in &ctx.provs {
            if prov.blocked.is_some()
                || check_taints(&prov.taints, info, eff.tolerate_prefer).is_err()
                || prov
                    .reqs
                    .compatible_with(&eff.reqs, |k| prov.type_label_keys.contains(k))
                    .is_err()
            {
                continue;
            }
            let combined = prov.reqs.intersection(&eff.reqs);
            for &t in &prov.types {
                let it: &InstanceType = &ctx.types[t];
                if it.compatible(&combined) {
                    out.extend(Self::type_domains(it, &combined, key));
                }
            }
        }
        for (node_labels, taints) in &ctx.node_domains {
            let Some(d) = node_labels.get(key) else {
                continue;
            };
            if !term.ignore_node_affinity && !eff.reqs.matches_labels(node_labels) {
                continue;
            }
            if term.honor_node_taints
                && taints
                    .iter()
                    .any(|t| t.effect != "PreferNoSchedule" && !info.tolerates(t))
            {
                continue;
            }
            out.insert(d.clone());
        }
        self.seen
            .borrow_mut()
            .entry(gi)
            .or_default()
            .extend(out.iter().cloned());
        let v = Rc::new(out.into_iter().collect::<Vec<_>>());
        self.domain_cache.borrow_mut().insert(id, v.clone());
        v
    }

    /// The global minimum of a spread term: the smallest count over its domains, or 0 when
    /// there are fewer domains than `minDomains`.
    pub(super) fn spread_min(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        eff: &Effective,
        gi: usize,
    ) -> u32 {
        let domains = self.spread_domains(ctx, info, class, eff, gi);
        let g = &self.groups[gi];
        let mut min = domains.iter().map(|d| g.count(d)).min();
        let planned = self.planned_spread_domains(ctx, gi, &domains);
        for (_, bound) in &planned {
            min = Some(min.map_or(*bound, |m| m.min(*bound)));
        }
        let added: BTreeSet<&String> = planned
            .iter()
            .filter_map(|(p, _)| match p.as_slice() {
                [only] => Some(only),
                _ => None,
            })
            .collect();
        if g.term
            .min_domains
            .is_some_and(|m| ((domains.len() + added.len()) as u32) < m)
        {
            return 0;
        }
        min.unwrap_or(0)
    }

    /// New nodes of this round are domains too once launched, when they pass the term's
    /// node-inclusion policy, even if the pod could never use them (a tainted provisioner's
    /// node under the default `nodeTaintsPolicy: Ignore`). For each such node outside `base`:
    /// the domains it may land in, and the largest count there (a bound on the minimum).
    pub(super) fn planned_spread_domains(
        &self,
        ctx: &Ctx<'_>,
        gi: usize,
        base: &[String],
    ) -> Vec<(Vec<String>, u32)> {
        let g = &self.groups[gi];
        let outside = |v: &String| base.binary_search(v).is_err();
        let mut out: Vec<(Vec<String>, u32)> = self
            .future
            .get(gi)
            .into_iter()
            .flatten()
            .filter(|possible| possible.iter().any(outside))
            .map(|possible| {
                let bound = possible.iter().map(|v| g.count(v)).max().unwrap_or(0);
                (possible.clone(), bound)
            })
            .collect();
        // Which provisioners' nodes may land outside `base`: cached per (base, group), as
        // `base` lives in the domain cache for the whole pass.
        let cache_key = (base.as_ptr() as usize, gi);
        let cached = self.foreign_cache.borrow().get(&cache_key).cloned();
        let foreign = match cached {
            Some(f) => f,
            None => {
                let f: Provs = Rc::new(
                    (0..ctx.provs.len())
                        .filter(|&pi| self.prov_domains(ctx, pi, &g.term.key).iter().any(outside))
                        .collect(),
                );
                self.foreign_cache.borrow_mut().insert(cache_key, f.clone());
                f
            }
        };
        out.extend(self.counted_new_nodes(ctx, gi, &foreign, outside));
        out
    }

    /// The new nodes (with pods) of `provs` that group `gi`'s term counts and that may land
    /// in a domain `outside` accepts: each one's possible domains, and the largest count among
    /// them (a bound on the global minimum once the node exists).
    fn counted_new_nodes(
        &self,
        ctx: &Ctx<'_>,
        gi: usize,
        provs: &[usize],
        outside: impl Fn(&String) -> bool,
    ) -> Vec<(Vec<String>, u32)> {
        let g = &self.groups[gi];
        if provs.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for node in self
            .nodes
            .iter()
            .filter(|n| n.existing.is_none() && !n.pods.is_empty() && provs.contains(&n.prov))
        {
            let possible = Self::possible_domains(ctx, node, &g.term.key);
            if !possible.iter().any(&outside) {
                continue;
            }
            if let Some(inc) = &g.term.counted_nodes {
                if !inc.includes(&Self::planned_labels(ctx, node), &node.taints) {
                    continue;
                }
            }
            let bound = possible.iter().map(|v| g.count(v)).max().unwrap_or(0);
            out.push((possible, bound));
        }
        out
    }

    /// After a pass: when a new node that a zone (or other non-hostname) spread counts could
    /// lower that spread's global minimum below what its placed pods allow, the possible
    /// domains of every counted new node, per group, for the next pass; else `None`.
    pub(super) fn future_domains(&self, ctx: &Ctx<'_>) -> Option<Vec<Vec<Vec<String>>>> {
        let mut out = vec![Vec::new(); self.groups.len()];
        let mut violated = false;
        let seen = self.seen.borrow();
        for (gi, g) in self.groups.iter().enumerate() {
            // Only groups whose pods ran the spread check, and only nodes that may land
            // outside every domain those pods saw.
            let Some(known) = seen.get(&gi) else {
                continue;
            };
            let TermKind::Spread { max_skew } = g.term.kind else {
                continue;
            };
            if g.inverse || g.term.key == labels::HOSTNAME || g.total == 0 {
                continue;
            }
            // Provisioners whose nodes may land outside what the pods saw.
            let foreign: Vec<usize> = (0..ctx.provs.len())
                .filter(|&pi| {
                    self.prov_domains(ctx, pi, &g.term.key)
                        .iter()
                        .any(|v| !known.contains(v))
                })
                .collect();
            let highest = g.counts.values().copied().max().unwrap_or(0);
            for (possible, bound) in
                self.counted_new_nodes(ctx, gi, &foreign, |v| !known.contains(v))
            {
                if highest > bound + max_skew {
                    violated = true;
                }
                out[gi].push(possible);
            }
            out[gi].sort();
            out[gi].dedup();
        }
        violated.then_some(out)
    }

    /// Every domain a provisioner's nodes could land in for a key (cached per provisioner).
    fn prov_domains(&self, ctx: &Ctx<'_>, pi: usize, key: &str) -> Rc<Vec<String>> {
        if let Some(v) = self.prov_domain_cache.borrow().get(&(pi, key.to_string())) {
            return v.clone();
        }
        let prov = &ctx.provs[pi];
        let mut out: BTreeSet<String> = BTreeSet::new();
        for &t in &prov.types {
            out.extend(Self::type_domains(&ctx.types[t], &prov.reqs, key));
        }
        let v = Rc::new(out.into_iter().collect::<Vec<_>>());
        self.prov_domain_cache
            .borrow_mut()
            .insert((pi, key.to_string()), v.clone());
        v
    }

    /// The domains of a key that an instance type offers under requirements.
    fn type_domains(it: &InstanceType, reqs: &Requirements, key: &str) -> Vec<String> {
        if key == labels::ZONE || key == labels::CAPACITY_TYPE {
            let filter = crate::scheduling::instance_type::OfferingFilter::new(reqs);
            return it
                .offerings
                .iter()
                .filter(|o| o.available && filter.allows(o))
                .map(|o| {
                    if key == labels::ZONE {
                        o.zone.clone()
                    } else {
                        o.capacity_type.clone()
                    }
                })
                .collect();
        }
        match it.labels.get(key) {
            Some(v) => reqs.allows(key, v).then(|| v.clone()).into_iter().collect(),
            None => reqs
                .get(key)
                .filter(|s| !s.complement)
                .map(|s| s.values.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// The domains a new node may still land in for a key: its own when settled, else those
    /// its remaining instance-type options offer under its requirements (sorted, distinct).
    fn possible_domains(ctx: &Ctx<'_>, node: &NodeState, key: &str) -> Vec<String> {
        if let Some(d) = Self::domain_of(node, &node.reqs, key) {
            return vec![d];
        }
        let prov = &ctx.provs[node.prov];
        let mut out: BTreeSet<String> = BTreeSet::new();
        for &o in &node.options {
            out.extend(Self::type_domains(
                &ctx.types[prov.types[o]],
                &node.reqs,
                key,
            ));
        }
        out.into_iter().collect()
    }

    pub(super) fn commit(
        &mut self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        p: usize,
        i: usize,
    ) {
        let c = &ctx.classes[class];
        let node = &mut self.nodes[i];
        node.pods.push(p);
        if node.existing.is_some() {
            for (u, r) in node.used.iter_mut().zip(&c.requests) {
                *u += r;
            }
            node.ports.extend(info.host_ports.iter().cloned());
        }
        let node = &self.nodes[i];
        let mut planned: Option<BTreeMap<String, String>> = None;
        let hits: Vec<(usize, Option<String>)> = c
            .selected_by
            .iter()
            .chain(c.owns_inverse.iter())
            .filter(|&&g| {
                let Some(inc) = &self.groups[g].term.counted_nodes else {
                    return true;
                };
                if node.existing.is_some() {
                    return inc.includes(&node.labels, &node.taints);
                }
                let l = planned.get_or_insert_with(|| Self::planned_labels(ctx, node));
                inc.includes(l, &node.taints)
            })
            .map(|&g| {
                (
                    g,
                    Self::domain_of(node, &node.reqs, &self.groups[g].term.key),
                )
            })
            .collect();
        for (g, d) in hits {
            if let Some(d) = d {
                *self.groups[g].counts.entry(d).or_insert(0) += 1;
                self.groups[g].total += 1;
            }
        }
    }

    /// The labels a new node is sure to carry: single-valued requirements, the labels every
    /// remaining instance-type option shares, and its hostname.
    pub(super) fn planned_labels(ctx: &Ctx<'_>, node: &NodeState) -> BTreeMap<String, String> {
        let prov = &ctx.provs[node.prov];
        let mut out: BTreeMap<String, String> = BTreeMap::new();
        let mut opts = node
            .options
            .iter()
            .map(|&o| &ctx.types[prov.types[o]].labels);
        if let Some(first) = opts.next() {
            let mut shared = first.clone();
            for l in opts {
                shared.retain(|k, v| l.get(k) == Some(v));
            }
            out = shared;
        }
        for (k, set) in node.reqs.iter() {
            if let Some(v) = set.single() {
                out.insert(k.clone(), v.to_string());
            }
        }
        out.insert(labels::HOSTNAME.to_string(), node.name.clone());
        out
    }

    /// Moves a provisioner's in-flight limit usage from a new node's old options to its new
    /// ones: O(resources) per placement instead of a recount over every node.
    pub(super) fn account_limits(&mut self, ctx: &Ctx<'_>, prov: usize, old: &[i64], new: &[i64]) {
        if prov == usize::MAX || ctx.provs[prov].limits.is_none() {
            return;
        }
        for (r, total) in self.limit_used[prov].iter_mut().enumerate() {
            *total += new.get(r).copied().unwrap_or(0) - old.get(r).copied().unwrap_or(0);
        }
    }

    /// Recomputes every provisioner's in-flight limit usage (after the improvement pass
    /// rewrites nodes wholesale).
    pub(super) fn recount_limits(&mut self, ctx: &Ctx<'_>) {
        for (pi, p) in ctx.provs.iter().enumerate() {
            if p.limits.is_none() {
                continue;
            }
            let mut total = vec![0; ctx.res_names.len()];
            for n in self
                .nodes
                .iter()
                .filter(|n| n.existing.is_none() && n.prov == pi)
            {
                for (t, m) in total.iter_mut().zip(&n.limit_max) {
                    *t += m;
                }
            }
            self.limit_used[pi] = total;
        }
    }
}
