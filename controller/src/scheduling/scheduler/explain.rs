//! Building the Decision and explaining, in words, why a pod did not fit.

use super::*;

// === impl State (decision) ===

impl State {
    pub(super) fn decision(&self, ctx: &Ctx<'_>, infos: &[PodInfo]) -> Decision {
        let mut d = Decision {
            notes: ctx.notes.clone(),
            ..Decision::default()
        };
        let mut upper_bound = false;
        let mut unpriced = 0;
        for node in &self.nodes {
            if node.pods.is_empty() {
                continue;
            }
            let pods: Vec<String> = node.pods.iter().map(|&p| infos[p].key.clone()).collect();
            if node.existing.is_some() {
                d.existing_nodes.push(ExistingNodePlacement {
                    node: node.name.clone(),
                    pods,
                });
                continue;
            }
            let prov = &ctx.provs[node.prov];
            let ct = Self::node_capacity_type(ctx, node);
            let mut opts: Vec<(f64, bool, &InstanceType)> = node
                .options
                .iter()
                .map(|&o| {
                    let t: &InstanceType = &ctx.types[prov.types[o]];
                    let (p, ub) = Self::option_price(t, &node.reqs, &ct);
                    (p, ub, t)
                })
                .collect();
            opts.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.2.name.cmp(&b.2.name)));
            opts.truncate(ctx.options.max_instance_type_options.max(1));
            let Some(&(price, ub, cheapest)) = opts.first() else {
                continue;
            };
            let mut zones: BTreeSet<String> = BTreeSet::new();
            let filter = crate::scheduling::instance_type::OfferingFilter::new(&node.reqs);
            for (_, _, t) in &opts {
                for o in &t.offerings {
                    if o.available && o.capacity_type == ct && filter.allows(o) {
                        zones.insert(o.zone.clone());
                    }
                }
            }
            // An option with no known price at all (e.g. a type the price table lacks) is
            // still launched when nothing priced fits; its price is unknown, not f64::MAX.
            let (price, ub) = if price >= f64::MAX {
                unpriced += 1;
                (0.0, false)
            } else {
                (price, ub)
            };
            upper_bound |= ub;
            d.total_price_per_hour += price;
            d.nodes.push(NewNode {
                provisioner: prov.name.clone(),
                instance_type: cheapest.name.clone(),
                instance_type_options: opts.iter().map(|o| o.2.name.clone()).collect(),
                capacity_type: ct,
                zones: zones.into_iter().collect(),
                price_per_hour: price,
                price_is_upper_bound: ub,
                pods,
            });
        }
        d.total_price_per_hour = (d.total_price_per_hour * 1e6).round() / 1e6;
        if upper_bound {
            d.notes.push(
                "spot prices are unknown offline: spot nodes are priced at their on-demand \
                 price (an upper bound); pass a spot discount assumption or live prices"
                    .to_string(),
            );
        }
        if unpriced > 0 {
            d.notes.push(format!(
                "{unpriced} new node(s) have no known price (their instance types have none): \
                 priced at 0 and left out of the total"
            ));
        }
        for (p, fails) in &self.unschedulable {
            let info = &infos[*p];
            let mut reasons = BTreeMap::new();
            for (pi, f) in fails {
                reasons.insert(
                    ctx.provs[*pi].name.clone(),
                    self.explain(ctx, info, ctx.pod_class[*p], *pi, f),
                );
            }
            if reasons.is_empty() {
                reasons.insert(String::new(), "no provisioner exists".to_string());
            }
            d.unschedulable.push(Unschedulable {
                pod: info.key.clone(),
                reasons,
            });
        }
        for (p, what) in &self.relaxed {
            d.relaxed.push(Relaxation {
                pod: infos[*p].key.clone(),
                relaxed: what.clone(),
            });
        }
        d
    }

    /// The first failing constraint for a provisioner, in words.
    pub(super) fn explain(
        &self,
        ctx: &Ctx<'_>,
        info: &PodInfo,
        class: usize,
        pi: usize,
        f: &Fail,
    ) -> String {
        let prov = &ctx.provs[pi];
        let name = &prov.name;
        let r = Relax {
            req_term: info.required_terms.len().saturating_sub(1),
            ..Relax::default()
        };
        let eff = self.effective(
            ctx,
            info,
            class,
            &Relax {
                pref_aff: info.preferred_affinity.len(),
                pref_anti: info.preferred_anti_affinity.len(),
                pref_node: info.preferred_terms.len(),
                soft_spread: info.soft_spreads.len(),
                ..r
            },
        );
        match f {
            Fail::Taint(t) => format!(
                "provisioner {name} has taint {} that the pod does not tolerate",
                t.display()
            ),
            Fail::Requirement(key) => explain_requirement(ctx, prov, &eff.reqs, key),
            Fail::NoInstanceType => {
                // Find the pod requirement that removes the last instance type.
                let mut reqs = prov.reqs.clone();
                for (k, set) in eff.reqs.iter() {
                    reqs.add(k, set.clone());
                    let any = prov.types.iter().any(|&t| ctx.types[t].compatible(&reqs));
                    if !any {
                        return format!(
                            "no instance type of provisioner {name} offers {} {set}",
                            friendly_key(k)
                        );
                    }
                }
                format!("no instance type of provisioner {name} matches the pod's requirements")
            }
            Fail::Resources => {
                explain_resources(ctx, prov, &eff.reqs, &ctx.classes[class].requests)
            }
            Fail::Limits => {
                let used: Vec<i64> = prov
                    .existing_used
                    .iter()
                    .zip(&self.limit_used[pi])
                    .map(|(a, b)| a + b)
                    .collect();
                let limits = prov.limits.clone().unwrap_or_default();
                let combined = prov.reqs.intersection(&eff.reqs);
                let compat: Vec<usize> = (0..prov.types.len())
                    .filter(|&o| ctx.types[prov.types[o]].compatible(&combined))
                    .collect();
                for (r, l) in limits.iter().enumerate() {
                    if *l == i64::MAX {
                        continue;
                    }
                    let smallest = compat.iter().map(|&o| prov.cap[o][r]).min().unwrap_or(0);
                    if used[r] + ctx.classes[class].requests[r] > *l || used[r] + smallest > *l {
                        let rn = &ctx.res_names[r];
                        let fmt = |v: i64| crate::api::quantity::format_milli(rn, v);
                        return format!(
                            "{rn} limit {} of provisioner {name} reached: {} used, {} left; a \
                             node for the pod adds at least {}",
                            fmt(*l),
                            fmt(used[r]),
                            fmt((*l - used[r]).max(0)),
                            fmt(smallest.max(ctx.classes[class].requests[r]))
                        );
                    }
                }
                format!("the limits of provisioner {name} leave no instance type that fits")
            }
            Fail::HostPorts => "the pod's host ports are already in use".to_string(),
            Fail::Blocked => match &prov.blocked {
                Some(Blocked::Deleting) => {
                    format!("provisioner {name} is being deleted; it launches no new nodes")
                }
                Some(Blocked::OverLimit {
                    resource,
                    used,
                    limit,
                }) => format!(
                    "provisioner {name} already uses {} {resource} (status.resources), over its \
                     limit of {}; it launches nothing until usage drops below the limit",
                    crate::api::quantity::format_milli(resource, *used),
                    crate::api::quantity::format_milli(resource, *limit)
                ),
                None => format!("provisioner {name} launches no new nodes"),
            },
            Fail::Pinned => format!(
                "no instance type of provisioner {name} is offered in the topology domain the pod needs"
            ),
            Fail::Topology(gi) => {
                let g = &self.groups[*gi];
                let key = &g.term.key;
                let spread = matches!(g.term.kind, TermKind::Spread { .. }) && !g.inverse;
                let mut counts: Vec<String> = Vec::new();
                if spread && key != labels::HOSTNAME {
                    let domains = self.spread_domains(ctx, info, class, &eff, *gi);
                    counts = domains
                        .iter()
                        .map(|d| format!("{d}={}", g.count(d)))
                        .collect();
                    for (possible, bound) in self.planned_spread_domains(ctx, *gi, &domains) {
                        counts.push(format!(
                            "(a new node of this round in {}: {bound})",
                            possible.join("|")
                        ));
                    }
                    if let Some(m) = g.term.min_domains.filter(|m| (domains.len() as u32) < *m) {
                        counts.push(format!(
                            "({} domain(s), fewer than minDomains {m}: global minimum 0)",
                            domains.len()
                        ));
                    }
                }
                let what = if g.inverse {
                    format!("{} of an existing pod", g.term.describe())
                } else {
                    g.term.describe()
                };
                match g.term.kind {
                    TermKind::Spread { .. } if !g.inverse => {
                        format!("{what} would be violated: {}", counts.join(" "))
                    }
                    TermKind::Affinity if g.total == 0 => {
                        format!("{what}: no pod matches the selector")
                    }
                    TermKind::AntiAffinity if key != labels::HOSTNAME => {
                        let mut taken: Vec<String> = g
                            .counts
                            .iter()
                            .filter(|(_, c)| **c > 0)
                            .map(|(d, c)| format!("{d}={c}"))
                            .collect();
                        taken.sort();
                        let whose = if g.inverse {
                            "the pods whose anti-affinity selects this pod run in"
                        } else {
                            "the pods it selects already run in"
                        };
                        if taken.is_empty() {
                            format!("{what} cannot be satisfied on a new node of provisioner {name}")
                        } else {
                            format!(
                                "{what} cannot be satisfied on a new node of provisioner {name}: \
                                 {whose} {}; the provisioner offers no other {}",
                                taken.join(" "),
                                friendly_key(key)
                            )
                        }
                    }
                    _ => format!("{what} cannot be satisfied on a new node of provisioner {name}"),
                }
            }
        }
    }
}

fn set_values(set: &ValueSet) -> String {
    if set.operator() == "In" {
        set.values.iter().cloned().collect::<Vec<_>>().join(", ")
    } else {
        set.describe()
    }
}

fn explain_requirement(ctx: &Ctx<'_>, prov: &Prov, reqs: &Requirements, key: &str) -> String {
    let name = &prov.name;
    let Some(pod_set) = reqs.get(key) else {
        return format!("the pod's requirements conflict with provisioner {name}");
    };
    match prov.reqs.get(key) {
        None => {
            let mut candidates: BTreeSet<&str> =
                prov.reqs.iter().map(|(k, _)| k.as_str()).collect();
            candidates.extend(labels::WELL_KNOWN_LABELS.iter().copied());
            for t in &prov.types {
                candidates.extend(ctx.types[*t].labels.keys().map(String::as_str));
            }
            let hint = labels::closest(key, candidates)
                .map(|c| format!(" (typo of '{c}'?)"))
                .unwrap_or_default();
            format!("label '{key}' has no known values{hint}")
        }
        Some(prov_set) => format!(
            "pod requires {} {}; provisioner {name} allows {}",
            friendly_key(key),
            set_values(pod_set),
            set_values(prov_set)
        ),
    }
}

fn explain_resources(ctx: &Ctx<'_>, prov: &Prov, reqs: &Requirements, req: &[i64]) -> String {
    let name = &prov.name;
    let combined = prov.reqs.intersection(reqs);
    let compat: Vec<usize> = (0..prov.types.len())
        .filter(|&o| ctx.types[prov.types[o]].compatible(&combined))
        .collect();
    // Types on which the DaemonSets alone do not fit take no pod at all.
    let ds_short = |o: usize| prov.alloc[o].iter().position(|a| *a < 0);
    if !compat.is_empty() && compat.iter().all(|&o| ds_short(o).is_some()) {
        let o = compat.iter().copied().max_by_key(|&o| {
            (
                prov.alloc_raw[o].iter().sum::<i64>(),
                std::cmp::Reverse(ctx.types[prov.types[o]].name.as_str()),
            )
        });
        if let Some((o, r)) = o.and_then(|o| ds_short(o).map(|r| (o, r))) {
            let rn = &ctx.res_names[r];
            let fmt = |v: i64| crate::api::quantity::format_milli(rn, v);
            let raw = prov.alloc_raw[o][r];
            return format!(
                "the daemonsets of provisioner {name} do not fit on any instance type that fits \
                 the pod: they request {} {rn} and {} has {} allocatable",
                fmt(raw - prov.alloc[o][r]),
                ctx.types[prov.types[o]].name,
                fmt(raw)
            );
        }
    }
    for (r, &want) in req.iter().enumerate() {
        if want == 0 {
            continue;
        }
        let best = compat.iter().max_by_key(|&&o| {
            (
                prov.alloc[o][r],
                std::cmp::Reverse(ctx.types[prov.types[o]].name.as_str()),
            )
        });
        let rn = &ctx.res_names[r];
        let fmt = |v: i64| crate::api::quantity::format_milli(rn, v);
        match best {
            Some(&o) if prov.alloc_raw[o][r] <= 0 && !resources::is_standard(rn) => {
                return format!(
                    "pod requests {} {rn}; no instance type allowed by provisioner {name} offers \
                     {rn} (allow a type that has it, e.g. with the instance-family or \
                     instance-gpu-name requirement)",
                    fmt(want)
                );
            }
            Some(&o) if prov.alloc[o][r] < want => {
                let t = &ctx.types[prov.types[o]].name;
                let raw = prov.alloc_raw[o][r];
                let ds = if raw >= want {
                    format!(" after daemonset overhead ({} before)", fmt(raw))
                } else {
                    String::new()
                };
                return format!(
                    "pod requests {} {rn}; the largest instance type allowed by provisioner {name} ({t}) has {} allocatable{ds}",
                    fmt(want),
                    fmt(prov.alloc[o][r].max(0))
                );
            }
            None => {
                return format!(
                    "no instance type of provisioner {name} matches the pod's requirements"
                )
            }
            _ => {}
        }
    }
    let list: ResourceList = req
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0)
        .map(|(r, v)| (ctx.res_names[r].clone(), *v))
        .collect();
    format!(
        "no instance type allowed by provisioner {name} has {} allocatable together",
        resources::describe(&list)
    )
}
