//! Facts about nodes shared by `explain` and `nodes`: instance type, capacity type and zone
//! from the labels, the price from the catalog, what the pods on a node request, and ages as
//! kubectl prints them.

use std::path::Path;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use karpenter::api::labels;
use karpenter::cloud::instance_types::{
    builtin_us_east_1, parse_instance_types, AwsCatalogOptions,
};
use karpenter::cluster::{nodes, pods, Cluster};
use karpenter::scheduling::resources::{self, ResourceList};
use karpenter::scheduling::InstanceType;
use serde::Serialize;

use crate::error::{Error, Result};

/// Hours in a month, as AWS prices a month (730 h).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// The catalog flags of `explain`, `nodes` and `simulate`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct CatalogArgs {
    /// An instance-type catalog file (YAML or JSON list) instead of the built-in AWS us-east-1
    /// catalog.
    #[arg(long, value_name = "FILE")]
    pub instance_types: Option<std::path::PathBuf>,

    /// Price spot offerings of the built-in catalog at this discount off on-demand (0 to 0.9),
    /// instead of leaving spot prices unknown.
    #[arg(long, value_name = "FRACTION")]
    pub assume_spot_discount: Option<f64>,
}

impl CatalogArgs {
    /// The catalog these flags choose.
    pub fn load(&self) -> Result<Vec<InstanceType>> {
        catalog(self.instance_types.as_deref(), self.assume_spot_discount)
    }
}

/// The instance-type catalog: a file (`--instance-types`) or the built-in AWS us-east-1 one.
pub fn catalog(
    file: Option<&Path>,
    assume_spot_discount: Option<f64>,
) -> Result<Vec<InstanceType>> {
    if let Some(d) = assume_spot_discount {
        if !(0.0..=0.9).contains(&d) {
            return Err(Error::Usage(format!(
                "--assume-spot-discount {d}: use a fraction from 0 to 0.9, e.g. 0.6 for 60 % off"
            )));
        }
        if file.is_some() {
            return Err(Error::Usage(
                "--assume-spot-discount applies to the built-in catalog only; with \
                 --instance-types, give spot offerings their own price in the catalog file"
                    .into(),
            ));
        }
    }
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })?;
            parse_instance_types(&text).map_err(|e| Error::Catalog {
                path: path.display().to_string(),
                message: e.to_string(),
            })
        }
        None => builtin_us_east_1(&AwsCatalogOptions {
            assume_spot_discount,
        })
        .map_err(|e| Error::Catalog {
            path: "<built-in AWS us-east-1 catalog>".into(),
            message: e.to_string(),
        }),
    }
}

/// A node's label, or `""`.
pub fn label<'a>(node: &'a Node, key: &str) -> &'a str {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map_or("", String::as_str)
}

/// A price per hour, and whether it is an upper bound (a spot offering whose price is not
/// known, priced at on-demand).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// USD per hour.
    pub per_hour: f64,
    /// True when the real price is at most this.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub upper_bound: bool,
}

// === impl Price ===

impl Price {
    /// `0.0960` or `<=0.0960`.
    pub fn display(&self) -> String {
        if self.upper_bound {
            format!("<={:.4}", self.per_hour)
        } else {
            format!("{:.4}", self.per_hour)
        }
    }
}

/// The price of a node's instance from the catalog (by instance type, capacity type and
/// zone), if the catalog knows the type.
pub fn node_price(catalog: &[InstanceType], node: &Node) -> Option<Price> {
    let name = label(node, labels::INSTANCE_TYPE);
    let t = catalog.iter().find(|t| t.name == name)?;
    let ct = match label(node, labels::CAPACITY_TYPE) {
        "" => labels::CAPACITY_TYPE_ON_DEMAND,
        ct => ct,
    };
    let zone = label(node, labels::ZONE);
    let on_demand = t
        .offerings
        .iter()
        .filter(|o| o.capacity_type == labels::CAPACITY_TYPE_ON_DEMAND)
        .filter_map(|o| o.price)
        .reduce(f64::min);
    let exact = t
        .offerings
        .iter()
        .filter(|o| o.capacity_type == ct && (zone.is_empty() || o.zone == zone))
        .filter_map(|o| o.price)
        .reduce(f64::min);
    match exact {
        Some(p) => Some(Price {
            per_hour: p,
            upper_bound: false,
        }),
        None => on_demand.map(|p| Price {
            per_hour: p,
            upper_bound: ct != labels::CAPACITY_TYPE_ON_DEMAND,
        }),
    }
}

/// What the pods on a node request (terminal pods excluded), and how many there are besides
/// DaemonSet ones.
pub fn requested(cluster: &Cluster, node: &str) -> (ResourceList, usize) {
    let mut total = ResourceList::new();
    let mut workload = 0;
    for p in cluster.pods_on(node) {
        if pods::is_terminal(p) {
            continue;
        }
        if let Ok(r) = resources::pod_requests(p) {
            resources::add_into(&mut total, &r);
        }
        if pods::counts_against_emptiness(p) {
            workload += 1;
        }
    }
    (total, workload)
}

/// A node's allocatable (or capacity, when it reports no allocatable), in milli-units.
pub fn allocatable(node: &Node) -> ResourceList {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .filter(|a| !a.is_empty())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    resources::parse_list(list).unwrap_or_default()
}

/// When the node was created.
pub fn created(node: &Node) -> Option<Timestamp> {
    node.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// A duration as kubectl prints ages: `45s`, `12m`, `5h3m`, `3d4h`, `400d`.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=599 => format!("{}m{}s", s / 60, s % 60),
        600..=10_799 => format!("{}m", s / 60),
        10_800..=28_799 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        28_800..=172_799 => format!("{}h", s / 3600),
        172_800..=691_199 => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The time given with `--now` (RFC 3339), or the current time.
pub fn parse_now(now: Option<&str>) -> Result<Timestamp> {
    match now {
        None => Ok(Timestamp::now()),
        Some(s) => s.trim().parse::<Timestamp>().map_err(|e| {
            Error::Usage(format!(
                "--now {s:?}: {e}; write an RFC 3339 time such as 2026-12-01T12:00:00Z"
            ))
        }),
    }
}

/// Seconds from `from` to `to` (negative when `to` is earlier).
pub fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_second() - from.as_second()
}

/// Node state words: `Ready`/`NotReady`, then `cordoned`, `empty`, `terminating`.
pub fn node_status(cluster: &Cluster, node: &Node) -> Vec<&'static str> {
    let mut out = vec![if nodes::is_ready(node) {
        "Ready"
    } else {
        "NotReady"
    }];
    if nodes::is_cordoned(node) {
        out.push("cordoned");
    }
    if nodes::is_deleting(node) {
        out.push("terminating");
    } else if requested(cluster, nodes::name(node)).1 == 0 {
        out.push("empty");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3_000), "50m");
        assert_eq!(human_duration(4 * 3600 + 120), "4h2m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86_400 + 7200), "3d2h");
        assert_eq!(human_duration(400 * 86_400), "400d");
        assert_eq!(human_duration(-3), "0s");
    }
}
