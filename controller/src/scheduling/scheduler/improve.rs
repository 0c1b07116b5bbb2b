//! The price-improvement pass: balanced re-packing and re-splitting into cheaper nodes.

use super::*;
use crate::scheduling::instance_type::OfferingFilter;

// === impl State (improvement) ===

/// A provisioner's option prices under its own requirements (see [`State::price_table`]).
pub(super) struct PriceTable {
    /// Whether the requirements allow spot.
    spot_allowed: bool,
    /// Per option: whether it has an available spot offering.
    offers_spot: Vec<bool>,
    /// Per option: its cheapest spot price (or the fallback [`State::option_price`] gives).
    spot: Vec<f64>,
    /// Per option: its cheapest on-demand price (or the fallback).
    on_demand: Vec<f64>,
}

impl PriceTable {
    /// The price option `o` launches at on its own: spot when allowed and offered.
    fn price(&self, o: usize) -> f64 {
        if self.spot_allowed && self.offers_spot[o] {
            self.spot[o]
        } else {
            self.on_demand[o]
        }
    }

    /// The prices a node with these options pays: spot when allowed and one option offers it.
    fn for_options(&self, options: &[usize]) -> &[f64] {
        if self.spot_allowed && options.iter().any(|&o| self.offers_spot[o]) {
            &self.spot
        } else {
            &self.on_demand
        }
    }
}

impl State {
    /// Cheapest (capacity type, price, upper-bound flag) of an option under requirements.
    pub(super) fn option_price(t: &InstanceType, reqs: &Requirements, ct: &str) -> (f64, bool) {
        match t.cheapest_price(reqs, Some(ct)) {
            Some(p) => (p, false),
            None => match t.cheapest_price(reqs, None) {
                Some(p) => (p, true),
                None => {
                    let any = t
                        .offerings
                        .iter()
                        .filter_map(|o| o.price)
                        .min_by(f64::total_cmp);
                    (any.unwrap_or(f64::MAX), true)
                }
            },
        }
    }

    /// In one pass over a type's offerings: whether an allowed spot offering is available,
    /// and [`Self::option_price`] for spot and for on-demand.
    fn own_prices(t: &InstanceType, reqs: &Requirements) -> (bool, f64, f64) {
        let min = |a: Option<f64>, b: f64| Some(a.map_or(b, |a| a.min(b)));
        let (mut spot, mut on_demand, mut allowed_any, mut any) = (None, None, None, None);
        let mut offers_spot = false;
        let filter = OfferingFilter::new(reqs);
        for o in &t.offerings {
            let allowed = o.available && filter.allows(o);
            let is_spot = o.capacity_type == labels::CAPACITY_TYPE_SPOT;
            offers_spot |= allowed && is_spot;
            let Some(p) = o.price else { continue };
            any = min(any, p);
            if allowed {
                allowed_any = min(allowed_any, p);
                if is_spot {
                    spot = min(spot, p);
                } else if o.capacity_type == labels::CAPACITY_TYPE_ON_DEMAND {
                    on_demand = min(on_demand, p);
                }
            }
        }
        let fallback = allowed_any.or(any).unwrap_or(f64::MAX);
        (
            offers_spot,
            spot.unwrap_or(fallback),
            on_demand.unwrap_or(fallback),
        )
    }

    pub(super) fn node_capacity_type(ctx: &Ctx<'_>, node: &NodeState) -> String {
        Self::capacity_type_of(ctx, node.prov, &node.reqs, &node.options).to_string()
    }

    /// Spot when the requirements allow it and one of the options offers it.
    fn capacity_type_of(
        ctx: &Ctx<'_>,
        pi: usize,
        reqs: &Requirements,
        options: &[usize],
    ) -> &'static str {
        let prov = &ctx.provs[pi];
        let spot = reqs.allows(labels::CAPACITY_TYPE, labels::CAPACITY_TYPE_SPOT)
            && options.iter().any(|&o| {
                ctx.types[prov.types[o]].has_offering(reqs, Some(labels::CAPACITY_TYPE_SPOT))
            });
        if spot {
            labels::CAPACITY_TYPE_SPOT
        } else {
            labels::CAPACITY_TYPE_ON_DEMAND
        }
    }

    /// The prices of provisioner `pi`'s options under its own requirements, computed once a
    /// round: most nodes the improvement pass prices carry exactly those requirements.
    pub(super) fn price_table(&self, ctx: &Ctx<'_>, pi: usize) -> Rc<PriceTable> {
        self.price_tables.borrow_mut()[pi]
            .get_or_insert_with(|| {
                let prov = &ctx.provs[pi];
                let reqs = &prov.reqs;
                let n = prov.types.len();
                let mut table = PriceTable {
                    spot_allowed: reqs.allows(labels::CAPACITY_TYPE, labels::CAPACITY_TYPE_SPOT),
                    offers_spot: Vec::with_capacity(n),
                    spot: Vec::with_capacity(n),
                    on_demand: Vec::with_capacity(n),
                };
                for &t in &prov.types {
                    let (offers_spot, spot, on_demand) = Self::own_prices(&ctx.types[t], reqs);
                    table.offers_spot.push(offers_spot);
                    table.spot.push(spot);
                    table.on_demand.push(on_demand);
                }
                Rc::new(table)
            })
            .clone()
    }

    pub(super) fn node_price(&self, ctx: &Ctx<'_>, node: &NodeState) -> f64 {
        self.options_price(ctx, node.prov, &node.reqs, &node.options)
    }

    /// The price a new node of provisioner `pi` with these requirements and options launches at.
    pub(super) fn options_price(
        &self,
        ctx: &Ctx<'_>,
        pi: usize,
        reqs: &Requirements,
        options: &[usize],
    ) -> f64 {
        let prov = &ctx.provs[pi];
        if *reqs == prov.reqs {
            let table = self.price_table(ctx, pi);
            let prices = table.for_options(options);
            return options
                .iter()
                .map(|&o| prices[o])
                .min_by(f64::total_cmp)
                .unwrap_or(f64::MAX);
        }
        let ct = Self::capacity_type_of(ctx, pi, reqs, options);
        options
            .iter()
            .map(|&o| Self::option_price(&ctx.types[prov.types[o]], reqs, ct).0)
            .min_by(f64::total_cmp)
            .unwrap_or(f64::MAX)
    }

    /// Re-packs the topology-free pods of each provisioner's new nodes, choosing for each node
    /// the pod class that keeps its cpu and memory use balanced; keeps the result when cheaper.
    pub(super) fn rebalance(&mut self, ctx: &Ctx<'_>, infos: &[PodInfo]) {
        for pi in 0..ctx.provs.len() {
            let simple: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| {
                    let n = &self.nodes[i];
                    n.existing.is_none()
                        && n.prov == pi
                        && !n.pods.is_empty()
                        && n.pods
                            .iter()
                            .all(|&p| !ctx.classes[ctx.pod_class[p]].touches_topology)
                })
                .collect();
            if simple.len() < 2 {
                continue;
            }
            let current: f64 = simple
                .iter()
                .map(|&i| self.node_price(ctx, &self.nodes[i]))
                .sum();
            let pods: Vec<usize> = simple
                .iter()
                .flat_map(|&i| self.nodes[i].pods.iter().copied())
                .collect();
            let Some(packed) = self.balanced_pack(ctx, infos, pi, &pods) else {
                continue;
            };
            let total: f64 = packed.iter().map(|n| self.node_price(ctx, n)).sum();
            if total + 1e-9 >= current || !self.within_limits(ctx, pi, &simple, &packed) {
                continue;
            }
            let first = simple[0];
            let mut kept = Vec::with_capacity(self.nodes.len());
            for (i, n) in std::mem::take(&mut self.nodes).into_iter().enumerate() {
                if i == first {
                    for mut p in packed.iter().cloned() {
                        p.name = format!("new-{}", self.new_count);
                        self.new_count += 1;
                        kept.push(p);
                    }
                }
                if simple.binary_search(&i).is_err() {
                    kept.push(n);
                }
            }
            self.nodes = kept;
            self.recount_limits(ctx);
        }
    }

    /// Whether replacing the new nodes `removed` (indices) by `added` keeps the provisioner
    /// within its limits.
    pub(super) fn within_limits(
        &self,
        ctx: &Ctx<'_>,
        pi: usize,
        removed: &[usize],
        added: &[NodeState],
    ) -> bool {
        let prov = &ctx.provs[pi];
        let Some(limits) = &prov.limits else {
            return true;
        };
        let mut total = prov.existing_used.clone();
        let kept = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| n.existing.is_none() && n.prov == pi && !removed.contains(i))
            .map(|(_, n)| n);
        for n in kept.chain(added.iter()) {
            for (t, m) in total.iter_mut().zip(&n.limit_max) {
                *t += m;
            }
        }
        total
            .iter()
            .zip(limits)
            .all(|(t, l)| *l == i64::MAX || t <= l)
    }

    /// Next-fit packing that picks, for the open node, the pod class keeping cpu and memory
    /// use closest to the node's shape (ties: the larger pod first).
    pub(super) fn balanced_pack(
        &self,
        ctx: &Ctx<'_>,
        infos: &[PodInfo],
        pi: usize,
        pods: &[usize],
    ) -> Option<Vec<NodeState>> {
        let cpu = ctx.res_index[resources::CPU];
        let mem = ctx.res_index[resources::MEMORY];
        let prov = &ctx.provs[pi];
        let mut by_class: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut rep_of: HashMap<usize, usize> = HashMap::new();
        for &p in pods {
            let c = ctx.pod_class[p];
            let rep = *rep_of.entry(ctx.classes[c].cache).or_insert(c);
            by_class.entry(rep).or_default().push(p);
        }
        let mut queues: Vec<(usize, Vec<usize>)> = by_class
            .into_iter()
            .map(|(c, mut v)| {
                v.reverse();
                (c, v)
            })
            .collect();
        let effs: Vec<Effective> = queues
            .iter()
            .map(|(c, v)| self.effective(ctx, &infos[v[0]], *c, &Relax::default()))
            .collect();
        let compats: Vec<Compat> = queues
            .iter()
            .zip(&effs)
            .map(|((c, _), e)| self.default_compat(ctx, pi, *c, e))
            .collect();
        let mut left: usize = pods.len();
        let mut out = Vec::new();
        while left > 0 {
            let mut node = self.fresh_node(ctx, pi, None);
            let (mut ac, mut am) = (1i64, 1i64);
            for o in 0..prov.types.len() {
                ac = ac.max(prov.alloc[o][cpu]);
                am = am.max(prov.alloc[o][mem]);
            }
            let mut blocked = vec![false; queues.len()];
            loop {
                let mut best: Option<(usize, f64, f64)> = None;
                for (qi, (c, q)) in queues.iter().enumerate() {
                    if q.is_empty() || blocked[qi] {
                        continue;
                    }
                    let r = &ctx.classes[*c].requests;
                    let uc = (node.used[cpu] + r[cpu]) as f64 / ac as f64;
                    let um = (node.used[mem] + r[mem]) as f64 / am as f64;
                    let score = (uc - um).abs();
                    let size = r[cpu] as f64 / ac as f64 + r[mem] as f64 / am as f64;
                    let better = match best {
                        None => true,
                        Some((_, s, z)) => score < s - 1e-12 || (score <= s + 1e-12 && size > z),
                    };
                    if better {
                        best = Some((qi, score, size));
                    }
                }
                let Some((qi, _, _)) = best else { break };
                let (c, q) = &mut queues[qi];
                let Some(&p) = q.last() else { break };
                let fresh = node.pods.is_empty();
                match self.try_new(ctx, &infos[p], *c, &effs[qi], &node, &compats[qi], fresh) {
                    Ok(u) => {
                        apply(&mut node, u, &ctx.classes[*c].requests, &infos[p]);
                        node.pods.push(p);
                        q.pop();
                        left -= 1;
                    }
                    Err(_) => blocked[qi] = true,
                }
            }
            if node.pods.is_empty() {
                return None;
            }
            out.push(node);
        }
        Some(out)
    }

    /// Which of provisioner `pi`'s types suit a pod class with no relaxation (`eff` is the
    /// class's effective requirements at that level): the placement pass's entry when it made
    /// one, else computed once per (provisioner, class shape) for the improvement pass.
    fn default_compat(&self, ctx: &Ctx<'_>, pi: usize, class: usize, eff: &Effective) -> Compat {
        let shape = ctx.classes[class].cache;
        if let Some(c) = self
            .compat
            .get(&(shape, 0))
            .and_then(|v| v.get(pi))
            .and_then(Option::as_ref)
        {
            return c.clone();
        }
        self.improve_compat
            .borrow_mut()
            .entry((pi, shape))
            .or_insert_with(|| Rc::new(class_compat(ctx, pi, &eff.reqs)))
            .clone()
    }

    /// Price improvement: re-split nodes into cheaper ones where that lowers the total.
    pub(super) fn improve(&mut self, ctx: &Ctx<'_>, infos: &[PodInfo]) {
        self.rebalance(ctx, infos);
        let cpu = ctx.res_index[resources::CPU];
        let mem = ctx.res_index[resources::MEMORY];
        let mut i = self.nodes.len();
        while i > 0 {
            i -= 1;
            let node = &self.nodes[i];
            if node.existing.is_some()
                || node
                    .pods
                    .iter()
                    .any(|&p| ctx.classes[ctx.pod_class[p]].touches_topology)
            {
                continue;
            }
            let prov_i = node.prov;
            let current = self.node_price(ctx, node);
            // Candidate price caps: distinct cheaper prices among the provisioner's types.
            let ct = Self::node_capacity_type(ctx, node);
            let table = self.price_table(ctx, prov_i);
            let by_ct = if ct == labels::CAPACITY_TYPE_SPOT {
                &table.spot
            } else {
                &table.on_demand
            };
            let mut caps: Vec<f64> = by_ct.iter().copied().filter(|p| *p < current).collect();
            caps.sort_by(|a, b| b.total_cmp(a));
            caps.dedup();
            caps.truncate(6);
            let mut pods = node.pods.clone();
            pods.sort_by(|a, b| {
                let ra = &ctx.classes[ctx.pod_class[*a]].requests;
                let rb = &ctx.classes[ctx.pod_class[*b]].requests;
                rb[cpu]
                    .cmp(&ra[cpu])
                    .then(rb[mem].cmp(&ra[mem]))
                    .then(a.cmp(b))
            });
            let mut best: Option<(f64, Vec<NodeState>)> = None;
            for cap in caps {
                if let Some(split) = self.repack(ctx, infos, prov_i, &pods, cap) {
                    let total: f64 = split.iter().map(|n| self.node_price(ctx, n)).sum();
                    if total + 1e-9 < best.as_ref().map_or(current, |b| b.0) {
                        best = Some((total, split));
                    }
                }
            }
            let best = best.filter(|(_, split)| self.within_limits(ctx, prov_i, &[i], split));
            if let Some((_, split)) = best {
                let mut split = split;
                for n in &mut split {
                    n.name = format!("new-{}", self.new_count);
                    self.new_count += 1;
                }
                self.nodes.splice(i..=i, split);
                self.recount_limits(ctx);
            }
        }
    }

    /// Packs pods into fresh nodes of one provisioner using only types priced at most `cap`.
    pub(super) fn repack(
        &self,
        ctx: &Ctx<'_>,
        infos: &[PodInfo],
        prov_i: usize,
        pods: &[usize],
        cap: f64,
    ) -> Option<Vec<NodeState>> {
        let prov = &ctx.provs[prov_i];
        let table = self.price_table(ctx, prov_i);
        let allowed: Vec<usize> = (0..prov.types.len())
            .filter(|&o| table.price(o) <= cap)
            .collect();
        if allowed.is_empty() {
            return None;
        }
        let mut out: Vec<NodeState> = Vec::new();
        // Per node, the class shapes (equivalence ids) it had no room for: its use only grows
        // and its options only narrow, so it never will (other refusals are not recorded: a
        // pod joining can define a label key another pod's requirement needs).
        let mut refused: Vec<Vec<usize>> = Vec::new();
        for &p in pods {
            let info = &infos[p];
            let class = ctx.pod_class[p];
            let shape = ctx.classes[class].cache;
            let eff = self.effective(ctx, info, class, &Relax::default());
            let cm = self.default_compat(ctx, prov_i, class, &eff);
            let req = &ctx.classes[class].requests;
            let mut placed = false;
            for (n, refused) in out.iter_mut().zip(refused.iter_mut()) {
                if refused.contains(&shape) {
                    continue;
                }
                match self.try_new(ctx, info, class, &eff, n, &cm, false) {
                    Ok(u) => {
                        apply(n, u, req, info);
                        n.pods.push(p);
                        placed = true;
                        break;
                    }
                    Err(Fail::Resources) => refused.push(shape),
                    Err(_) => {}
                }
            }
            if !placed {
                let mut n = self.fresh_node(ctx, prov_i, Some(&allowed));
                let u = self.try_new(ctx, info, class, &eff, &n, &cm, true).ok()?;
                apply(&mut n, u, req, info);
                n.pods.push(p);
                out.push(n);
                refused.push(Vec::new());
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::instance_types::{builtin_us_east_1, AwsCatalogOptions};

    /// The one-pass prices equal the per-question helpers on the built-in catalog, under
    /// requirements that allow everything, one zone, on-demand only, and a zone with no
    /// offering (the fallbacks).
    #[test]
    fn own_prices_agree_with_option_price() {
        let types = builtin_us_east_1(&AwsCatalogOptions::default()).unwrap();
        let mut sets = vec![Requirements::new()];
        let mut zone = Requirements::new();
        zone.add(labels::ZONE, ValueSet::is_in(["us-east-1b"]));
        sets.push(zone);
        let mut od = Requirements::new();
        od.add(labels::CAPACITY_TYPE, ValueSet::is_in(["on-demand"]));
        sets.push(od);
        let mut nowhere = Requirements::new();
        nowhere.add(labels::ZONE, ValueSet::is_in(["mars-1a"]));
        sets.push(nowhere);
        for reqs in &sets {
            for t in &types {
                let (offers_spot, spot, on_demand) = State::own_prices(t, reqs);
                assert_eq!(
                    offers_spot,
                    t.has_offering(reqs, Some(labels::CAPACITY_TYPE_SPOT)),
                    "{}",
                    t.name
                );
                let want_spot = State::option_price(t, reqs, labels::CAPACITY_TYPE_SPOT).0;
                let want_od = State::option_price(t, reqs, labels::CAPACITY_TYPE_ON_DEMAND).0;
                assert_eq!(spot.to_bits(), want_spot.to_bits(), "{} spot", t.name);
                assert_eq!(on_demand.to_bits(), want_od.to_bits(), "{} od", t.name);
            }
        }
    }
}
