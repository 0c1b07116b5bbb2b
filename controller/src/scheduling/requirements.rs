//! The node-selector requirement algebra: sets of label values (`In`, `NotIn`, `Exists`,
//! `DoesNotExist`, `Gt`, `Lt`), their intersection, and Karpenter's compatibility rule between
//! what a node offers and what a pod asks for.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::api::labels;

/// An invalid requirement: unknown operator or a bad `Gt`/`Lt` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("requirement on {key:?}: {message}")]
pub struct RequirementError {
    /// The label key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

/// The set of values one label key may take.
///
/// `complement == false`: exactly `values` (empty means the label must not exist).
/// `complement == true`: any value except `values`, restricted to integers in
/// `(greater_than, less_than)` when bounds are set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValueSet {
    /// Whether `values` are excluded rather than included.
    pub complement: bool,
    /// The included (or excluded) values.
    pub values: BTreeSet<String>,
    /// Exclusive lower integer bound.
    pub greater_than: Option<i64>,
    /// Exclusive upper integer bound.
    pub less_than: Option<i64>,
}

/// Requirements keyed by (normalised) label key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Requirements {
    map: BTreeMap<String, ValueSet>,
}

// === impl ValueSet ===

impl ValueSet {
    /// Exactly these values.
    pub fn is_in<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        ValueSet {
            complement: false,
            values: values.into_iter().map(Into::into).collect(),
            greater_than: None,
            less_than: None,
        }
    }

    /// Any value except these.
    pub fn not_in<I: IntoIterator<Item = S>, S: Into<String>>(values: I) -> Self {
        ValueSet {
            complement: true,
            ..Self::is_in(values)
        }
    }

    /// Any value.
    pub fn exists() -> Self {
        Self::not_in(Vec::<String>::new())
    }

    /// No value (the label must be absent).
    pub fn does_not_exist() -> Self {
        Self::is_in(Vec::<String>::new())
    }

    /// Builds the set for an operator and its values.
    pub fn from_operator(key: &str, op: &str, values: &[String]) -> Result<Self, RequirementError> {
        let err = |message: String| RequirementError {
            key: key.to_string(),
            message,
        };
        let bound = || -> Result<i64, RequirementError> {
            match values {
                [v] => v
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| err(format!("{op} needs an integer value, got {v:?}"))),
                _ => Err(err(format!("{op} needs exactly one value"))),
            }
        };
        Ok(match op {
            "In" => Self::is_in(values.iter().cloned()),
            "NotIn" => Self::not_in(values.iter().cloned()),
            "Exists" => Self::exists(),
            "DoesNotExist" => Self::does_not_exist(),
            "Gt" => ValueSet {
                greater_than: Some(bound()?),
                ..Self::exists()
            },
            "Lt" => ValueSet {
                less_than: Some(bound()?),
                ..Self::exists()
            },
            other => return Err(err(format!("unknown operator {other:?}"))),
        })
    }

    /// The operator this set reads as (Gt/Lt read as `Exists`, as in Karpenter).
    pub fn operator(&self) -> &'static str {
        match (self.complement, self.values.is_empty()) {
            (true, true) => "Exists",
            (true, false) => "NotIn",
            (false, false) => "In",
            (false, true) => "DoesNotExist",
        }
    }

    fn within_bounds(&self, v: &str) -> bool {
        if self.greater_than.is_none() && self.less_than.is_none() {
            return true;
        }
        let Ok(n) = v.parse::<i64>() else {
            return false;
        };
        self.greater_than.is_none_or(|g| n > g) && self.less_than.is_none_or(|l| n < l)
    }

    /// Whether the value is in the set.
    pub fn has(&self, v: &str) -> bool {
        if self.complement {
            !self.values.contains(v) && self.within_bounds(v)
        } else {
            self.values.contains(v)
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        if self.complement {
            matches!((self.greater_than, self.less_than), (Some(g), Some(l)) if l.saturating_sub(g) <= 1)
        } else {
            self.values.is_empty()
        }
    }

    /// The tighter of both sets' lower and upper bounds.
    fn merged_bounds(&self, other: &ValueSet) -> (Option<i64>, Option<i64>) {
        let greater_than = match (self.greater_than, other.greater_than) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let less_than = match (self.less_than, other.less_than) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        (greater_than, less_than)
    }

    /// The intersection of two sets.
    pub fn intersect(&self, other: &ValueSet) -> ValueSet {
        let (greater_than, less_than) = self.merged_bounds(other);
        let mut out = match (self.complement, other.complement) {
            (true, true) => ValueSet {
                complement: true,
                values: self.values.union(&other.values).cloned().collect(),
                greater_than,
                less_than,
            },
            (true, false) => ValueSet::is_in(other.values.iter().filter(|v| self.has(v)).cloned()),
            (false, true) => ValueSet::is_in(self.values.iter().filter(|v| other.has(v)).cloned()),
            (false, false) => ValueSet::is_in(self.values.intersection(&other.values).cloned()),
        };
        if out.complement && out.is_empty() {
            out = ValueSet::does_not_exist();
        }
        out
    }

    /// Whether the intersection with `other` is non-empty: `!self.intersect(other).is_empty()`
    /// without building it.
    pub fn overlaps(&self, other: &ValueSet) -> bool {
        match (self.complement, other.complement) {
            (true, true) => {
                let bounds = self.merged_bounds(other);
                !matches!(bounds, (Some(g), Some(l)) if l.saturating_sub(g) <= 1)
            }
            (true, false) => other.values.iter().any(|v| self.has(v)),
            (false, true) => self.values.iter().any(|v| other.has(v)),
            (false, false) => {
                let (small, large) = if self.values.len() <= other.values.len() {
                    (&self.values, &other.values)
                } else {
                    (&other.values, &self.values)
                };
                small.iter().any(|v| large.contains(v))
            }
        }
    }

    /// A single value when the set has exactly one.
    pub fn single(&self) -> Option<&str> {
        match (self.complement, self.values.len()) {
            (false, 1) => self.values.iter().next().map(String::as_str),
            _ => None,
        }
    }

    /// `In [a, b]`, `NotIn [a]`, `Exists`, `DoesNotExist`, `Gt 3`.
    pub fn describe(&self) -> String {
        let list = || self.values.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        match self.operator() {
            "In" => parts.push(format!("In [{}]", list())),
            "NotIn" => parts.push(format!("NotIn [{}]", list())),
            "DoesNotExist" => parts.push("DoesNotExist".to_string()),
            _ => {}
        }
        if let Some(g) = self.greater_than {
            parts.push(format!("Gt {g}"));
        }
        if let Some(l) = self.less_than {
            parts.push(format!("Lt {l}"));
        }
        if parts.is_empty() {
            parts.push("Exists".to_string());
        }
        parts.join(" ")
    }
}

impl fmt::Display for ValueSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

// === impl Requirements ===

impl Requirements {
    /// No requirements.
    pub fn new() -> Self {
        Self::default()
    }

    /// From API requirements; keys are normalised, repeated keys intersect.
    pub fn from_api(reqs: &[crate::api::Requirement]) -> Result<Self, RequirementError> {
        let mut out = Requirements::new();
        for r in reqs {
            let key = labels::normalize(&r.key);
            out.add(key, ValueSet::from_operator(key, &r.operator, &r.values)?);
        }
        Ok(out)
    }

    /// From Kubernetes node-selector requirements.
    pub fn from_node_selector(
        reqs: &[k8s_openapi::api::core::v1::NodeSelectorRequirement],
    ) -> Result<Self, RequirementError> {
        let mut out = Requirements::new();
        for r in reqs {
            let key = labels::normalize(&r.key);
            let values = r.values.clone().unwrap_or_default();
            out.add(key, ValueSet::from_operator(key, &r.operator, &values)?);
        }
        Ok(out)
    }

    /// One `In [value]` per label.
    pub fn from_labels<'a>(labels_: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        let mut out = Requirements::new();
        for (k, v) in labels_ {
            out.add(labels::normalize(k), ValueSet::is_in([v.clone()]));
        }
        out
    }

    /// Adds (intersects) a set for a key.
    pub fn add(&mut self, key: &str, set: ValueSet) {
        self.merge(key, Cow::Owned(set));
    }

    /// Intersects `set` into `key`'s, copying it only when the key is new. Intersecting a
    /// set with itself changes nothing (the common case when requirements are combined with
    /// a copy of themselves), so that is skipped.
    fn merge(&mut self, key: &str, set: Cow<'_, ValueSet>) {
        match self.map.get_mut(key) {
            Some(existing) if *existing == *set => {}
            Some(existing) => *existing = existing.intersect(&set),
            None => {
                self.map.insert(key.to_string(), set.into_owned());
            }
        }
    }

    /// Adds every requirement of `other`.
    pub fn add_all(&mut self, other: &Requirements) {
        for (k, v) in &other.map {
            self.merge(k, Cow::Borrowed(v));
        }
    }

    /// The set of a key, if constrained.
    pub fn get(&self, key: &str) -> Option<&ValueSet> {
        self.map.get(key)
    }

    /// Whether the key is constrained.
    pub fn has_key(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Iterates over keys and sets.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ValueSet)> {
        self.map.iter()
    }

    /// Number of constrained keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is constrained.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `value` is allowed for `key` (unconstrained keys allow everything).
    pub fn allows(&self, key: &str, value: &str) -> bool {
        self.map.get(key).is_none_or(|s| s.has(value))
    }

    /// Karpenter's `Intersects`: every shared key has a common value, except when both sides
    /// only exclude values (`NotIn`/`DoesNotExist`). Returns the first failing key.
    pub fn intersects<'a>(&'a self, incoming: &'a Requirements) -> Result<(), &'a str> {
        let (small, large, incoming_is_small) = if self.map.len() <= incoming.map.len() {
            (&self.map, &incoming.map, false)
        } else {
            (&incoming.map, &self.map, true)
        };
        for (key, a) in small {
            let Some(b) = large.get(key) else { continue };
            let (existing, inc) = if incoming_is_small { (b, a) } else { (a, b) };
            if !existing.overlaps(inc) {
                let neg = |s: &ValueSet| matches!(s.operator(), "NotIn" | "DoesNotExist");
                if neg(inc) && neg(existing) {
                    continue;
                }
                return Err(key);
            }
        }
        Ok(())
    }

    /// Karpenter's `Compatible`: custom (not well-known) keys of `incoming` must be defined
    /// here unless `incoming` uses `NotIn`/`DoesNotExist`; then [`Self::intersects`].
    pub fn compatible<'a>(&'a self, incoming: &'a Requirements) -> Result<(), &'a str> {
        self.compatible_with(incoming, |_| false)
    }

    /// [`Self::compatible`], treating keys for which `known` is true as well-known (e.g. labels
    /// every instance type of a provisioner defines).
    pub fn compatible_with<'a>(
        &'a self,
        incoming: &'a Requirements,
        known: impl Fn(&str) -> bool,
    ) -> Result<(), &'a str> {
        for (key, set) in &incoming.map {
            if labels::is_well_known(key) || self.map.contains_key(key) || known(key) {
                continue;
            }
            if !matches!(set.operator(), "NotIn" | "DoesNotExist") {
                return Err(key);
            }
        }
        self.intersects(incoming)
    }

    /// Whether a concrete label map satisfies every requirement (Kubernetes node matching).
    pub fn matches_labels(&self, node_labels: &BTreeMap<String, String>) -> bool {
        self.map.iter().all(|(k, set)| match node_labels.get(k) {
            Some(v) => set.has(v),
            None => {
                set.greater_than.is_none()
                    && set.less_than.is_none()
                    && matches!(set.operator(), "NotIn" | "DoesNotExist")
            }
        })
    }

    /// The intersection of two requirement sets.
    pub fn intersection(&self, other: &Requirements) -> Requirements {
        let mut out = self.clone();
        out.add_all(other);
        out
    }
}

impl fmt::Display for Requirements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.map.iter().map(|(k, v)| format!("{k} {v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLES: &[&str] = &["a", "b", "c", "1", "3", "5", "7", "10"];

    fn arb_set() -> impl Strategy<Value = ValueSet> {
        let vals = proptest::sample::subsequence(SAMPLES.to_vec(), 0..4);
        prop_oneof![
            vals.clone().prop_map(ValueSet::is_in),
            vals.prop_map(ValueSet::not_in),
            Just(ValueSet::exists()),
            Just(ValueSet::does_not_exist()),
            (0i64..10).prop_map(|n| ValueSet {
                greater_than: Some(n),
                ..ValueSet::exists()
            }),
            (0i64..10).prop_map(|n| ValueSet {
                less_than: Some(n),
                ..ValueSet::exists()
            }),
        ]
    }

    fn members(s: &ValueSet) -> Vec<&'static str> {
        SAMPLES.iter().copied().filter(|v| s.has(v)).collect()
    }

    proptest! {
        #[test]
        fn intersection_commutes(a in arb_set(), b in arb_set()) {
            prop_assert_eq!(members(&a.intersect(&b)), members(&b.intersect(&a)));
            prop_assert_eq!(a.intersect(&b).is_empty(), b.intersect(&a).is_empty());
        }

        #[test]
        fn overlaps_is_a_non_empty_intersection(a in arb_set(), b in arb_set()) {
            prop_assert_eq!(a.overlaps(&b), !a.intersect(&b).is_empty());
        }

        #[test]
        fn intersection_is_subset(a in arb_set(), b in arb_set()) {
            let i = a.intersect(&b);
            for v in SAMPLES {
                if i.has(v) {
                    prop_assert!(a.has(v) && b.has(v));
                }
            }
        }

        #[test]
        fn intersection_membership_brute_force(a in arb_set(), b in arb_set()) {
            let i = a.intersect(&b);
            for v in SAMPLES {
                prop_assert_eq!(i.has(v), a.has(v) && b.has(v), "{}", v);
            }
        }

        #[test]
        fn intersects_agrees_with_brute_force(a in arb_set(), b in arb_set()) {
            let mut ra = Requirements::new();
            ra.add("topology.kubernetes.io/zone", a.clone());
            let mut rb = Requirements::new();
            rb.add("topology.kubernetes.io/zone", b.clone());
            // Brute force over sample values plus "some other value" for complements.
            let common = SAMPLES.iter().any(|v| a.has(v) && b.has(v))
                || (a.complement && b.complement && a.greater_than.is_none() && a.less_than.is_none()
                    && b.greater_than.is_none() && b.less_than.is_none())
                || (a.complement && b.complement && !a.intersect(&b).is_empty());
            let neg = |s: &ValueSet| matches!(s.operator(), "NotIn" | "DoesNotExist");
            let expected = common || (neg(&a) && neg(&b));
            prop_assert_eq!(ra.intersects(&rb).is_ok(), expected);
            prop_assert_eq!(ra.intersects(&rb).is_ok(), rb.intersects(&ra).is_ok());
        }
    }

    #[test]
    fn operators() {
        let s = |op: &str, v: &[&str]| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            ValueSet::from_operator("k", op, &v).unwrap()
        };
        assert!(s("In", &["a"]).has("a"));
        assert!(!s("In", &["a"]).has("b"));
        assert!(s("NotIn", &["a"]).has("b"));
        assert!(s("Exists", &[]).has("x"));
        assert!(!s("DoesNotExist", &[]).has("x"));
        assert!(s("Gt", &["3"]).has("4"));
        assert!(!s("Gt", &["3"]).has("3"));
        assert!(!s("Gt", &["3"]).has("x"));
        assert!(s("Lt", &["3"]).has("2"));
        assert!(s("Gt", &["3"]).intersect(&s("Lt", &["4"])).is_empty());
        assert!(!s("Gt", &["3"]).intersect(&s("Lt", &["5"])).is_empty());
        assert!(ValueSet::from_operator("k", "Foo", &[]).is_err());
        assert!(ValueSet::from_operator("k", "Gt", &["x".into()]).is_err());
    }

    #[test]
    fn custom_keys_must_be_defined() {
        let node =
            Requirements::from_api(&[crate::api::Requirement::new("team", "In", &["a"])]).unwrap();
        let pod = |op: &str, v: &[&str]| {
            Requirements::from_api(&[crate::api::Requirement::new("other", op, v)]).unwrap()
        };
        assert_eq!(node.compatible(&pod("In", &["x"])), Err("other"));
        assert_eq!(node.compatible(&pod("Exists", &[])), Err("other"));
        assert!(node.compatible(&pod("NotIn", &["x"])).is_ok());
        assert!(node.compatible(&pod("DoesNotExist", &[])).is_ok());
        let zone =
            Requirements::from_api(&[crate::api::Requirement::new(labels::ZONE, "In", &["z"])])
                .unwrap();
        assert!(
            node.compatible(&zone).is_ok(),
            "well-known keys are allowed"
        );
    }

    #[test]
    fn legacy_keys_normalise() {
        let r = Requirements::from_api(&[crate::api::Requirement::new(
            "failure-domain.beta.kubernetes.io/zone",
            "In",
            &["z"],
        )])
        .unwrap();
        assert!(r.has_key(labels::ZONE));
    }
}
