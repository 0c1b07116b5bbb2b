//! Discovery and caches: subnets and security groups by selector, instance types with zones
//! and prices, spot prices, AMIs from SSM parameters, instance profiles from IAM, launch
//! templates by content hash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::api::AwsProvider;
use crate::cloud::catalog::{builtin_us_east_1, Architecture, AwsInstanceTypeInfo};
use crate::cloud::provider::{
    cluster_tag_key, describe_selector, lock, CloudError, MANAGED_BY_TAG, PROVISIONER_TAG,
};

use super::api::{
    Ec2Api, Filter, FleetRequest, Image, InstanceProfileInfo, LaunchTemplateSpec, SecurityGroup,
    Subnet,
};
use super::user_data::{ami_parameter, Accelerator, SUPPORTED_AMI_FAMILIES};
use super::{AwsCloud, Cached, DISCOVERY_TAG, IDS_SELECTOR_KEY};

/// Tags or IDs to describe filters; comma-separated values are alternatives.
fn selector_filters(selector: &BTreeMap<String, String>, id_filter: &str) -> Vec<Filter> {
    selector
        .iter()
        .map(|(k, v)| {
            if k == IDS_SELECTOR_KEY {
                Filter::new(id_filter, &split_values(v))
            } else if v == "*" || v.is_empty() {
                Filter::new("tag-key", &[k])
            } else {
                // `Name: "a,b"` selects either value, as upstream reads it.
                Filter::new(&format!("tag:{k}"), &split_values(v))
            }
        })
        .collect()
}

/// Values of a selector entry: comma-separated, trimmed, empty ones dropped.
fn split_values(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect()
}

/// What DescribeImages is asked for an `amiSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ImageQuery {
    pub(super) filters: Vec<Filter>,
    pub(super) owners: Vec<String>,
    pub(super) image_ids: Vec<String>,
}

/// An `amiSelector` as a DescribeImages query: `aws-ids`/`aws::ids` are image IDs,
/// `aws::name` a name filter, `aws::owners` the owners, other keys tags (`*` any value).
/// A selector by name without owners only finds AMIs of this account or Amazon: a name alone
/// would also match any public AMI that someone gave the same name.
pub(super) fn image_query(selector: &BTreeMap<String, String>) -> ImageQuery {
    let mut q = ImageQuery::default();
    let mut by_name = false;
    for (k, v) in selector {
        match k.as_str() {
            IDS_SELECTOR_KEY | "aws::ids" => q
                .image_ids
                .extend(split_values(v).into_iter().map(str::to_string)),
            "aws::owners" => q
                .owners
                .extend(split_values(v).into_iter().map(str::to_string)),
            "aws::name" => {
                by_name = true;
                q.filters.push(Filter::new("name", &split_values(v)));
            }
            _ if v == "*" || v.is_empty() => q.filters.push(Filter::new("tag-key", &[k])),
            _ => q
                .filters
                .push(Filter::new(&format!("tag:{k}"), &split_values(v))),
        }
    }
    if by_name && q.owners.is_empty() && q.image_ids.is_empty() {
        q.owners = vec!["self".into(), "amazon".into()];
    }
    q
}

// === impl AwsCloud (discovery) ===

impl<A: Ec2Api> AwsCloud<A> {
    fn default_selector(&self) -> BTreeMap<String, String> {
        [(DISCOVERY_TAG.to_string(), self.config.cluster_name.clone())].into()
    }

    /// Subnets matching the provider's selector, cached for `discovery_ttl` (a miss is looked
    /// up again each time); an error naming the selector when none match.
    pub async fn subnets(&self, provider: &AwsProvider) -> Result<Vec<Subnet>, CloudError> {
        let selector = provider
            .subnet_selector
            .clone()
            .unwrap_or_else(|| self.default_selector());
        let filters = selector_filters(&selector, "subnet-id");
        let key = describe_selector(&selector);
        let now = self.clock.now();
        if let Some(c) = lock(&self.caches).subnets.get(&key) {
            if now.duration_since(c.at) < self.config.discovery_ttl {
                return Ok(c.value.as_ref().clone());
            }
        }
        let mut subnets = self
            .call("DescribeSubnets", || {
                self.api.describe_subnets(filters.clone())
            })
            .await?;
        if subnets.is_empty() {
            let all = self
                .call("DescribeSubnets", || self.api.describe_subnets(vec![]))
                .await?;
            return Err(CloudError::NoSubnets {
                selector: describe_selector(&selector),
                found: format!("none of the {} subnets visible", all.len()),
            });
        }
        subnets.sort_by(|a, b| a.id.cmp(&b.id));
        lock(&self.caches).subnets.insert(
            key,
            Cached {
                at: now,
                value: Arc::new(subnets.clone()),
            },
        );
        Ok(subnets)
    }

    /// Security groups matching the provider's selector, cached for `discovery_ttl` (a miss is
    /// looked up again each time); an error naming it when none match.
    pub async fn security_groups(
        &self,
        provider: &AwsProvider,
    ) -> Result<Vec<SecurityGroup>, CloudError> {
        let selector = provider
            .security_group_selector
            .clone()
            .unwrap_or_else(|| self.default_selector());
        let filters = selector_filters(&selector, "group-id");
        let key = describe_selector(&selector);
        let now = self.clock.now();
        if let Some(c) = lock(&self.caches).security_groups.get(&key) {
            if now.duration_since(c.at) < self.config.discovery_ttl {
                return Ok(c.value.as_ref().clone());
            }
        }
        let mut groups = self
            .call("DescribeSecurityGroups", || {
                self.api.describe_security_groups(filters.clone())
            })
            .await?;
        if groups.is_empty() {
            let all = self
                .call("DescribeSecurityGroups", || {
                    self.api.describe_security_groups(vec![])
                })
                .await?;
            return Err(CloudError::NoSecurityGroups {
                selector: describe_selector(&selector),
                found: format!("none of the {} security groups visible", all.len()),
            });
        }
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        lock(&self.caches).security_groups.insert(
            key,
            Cached {
                at: now,
                value: Arc::new(groups.clone()),
            },
        );
        Ok(groups)
    }

    /// Instance types with zones from the offerings and on-demand prices from the built-in
    /// catalog; cached for `cache_ttl`.
    pub async fn instance_type_infos(&self) -> Result<Arc<Vec<AwsInstanceTypeInfo>>, CloudError> {
        let now = self.clock.now();
        if let Some(c) = &lock(&self.caches).types {
            if now.duration_since(c.at) < self.config.cache_ttl {
                return Ok(c.value.clone());
            }
        }
        let mut infos = self
            .call("DescribeInstanceTypes", || {
                self.api.describe_instance_types()
            })
            .await?;
        let offerings = self
            .call("DescribeInstanceTypeOfferings", || {
                self.api.describe_instance_type_offerings()
            })
            .await?;
        let mut zones: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (t, z) in offerings {
            zones.entry(t).or_default().insert(z);
        }
        let prices = self.on_demand_prices().await?;
        for info in &mut infos {
            info.zones = zones
                .get(&info.name)
                .map(|z| z.iter().cloned().collect())
                .unwrap_or_default();
            info.on_demand_price = prices.get(&info.name).copied();
        }
        infos.retain(|i| !i.zones.is_empty());
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let value = Arc::new(infos);
        lock(&self.caches).types = Some(Cached {
            at: now,
            value: value.clone(),
        });
        Ok(value)
    }

    /// On-demand USD/hour per instance type: from the Pricing API for the configured region
    /// (cached for `pricing_ttl`; a type the API does not price has no known price), else the
    /// built-in table (us-east-1 prices; cached for `cache_ttl`, then the API is tried again).
    pub async fn on_demand_prices(&self) -> Result<Arc<HashMap<String, f64>>, CloudError> {
        let now = self.clock.now();
        if let Some(c) = &lock(&self.caches).on_demand {
            let (_, live) = c.value.as_ref();
            let ttl = if *live {
                self.config.pricing_ttl
            } else {
                self.config.cache_ttl
            };
            if now.duration_since(c.at) < ttl {
                return Ok(Arc::new(c.value.0.clone()));
            }
        }
        let region = self.config.region.clone();
        // One attempt, no retries: prices are optional, the built-in table stands in.
        let value = match self
            .api
            .on_demand_prices(&region)
            .await
            .map_err(|e| e.into_cloud("GetProducts"))
        {
            Ok(p) if !p.is_empty() => (p, true),
            other => {
                match &other {
                    Err(e) => tracing::warn!(
                        error = %e,
                        region = region.as_str(),
                        "on-demand prices unavailable from the Pricing API; using the built-in table"
                    ),
                    Ok(_) => tracing::warn!(
                        region = region.as_str(),
                        "the Pricing API knows no prices; using the built-in table"
                    ),
                }
                let builtin = builtin_us_east_1()?
                    .iter()
                    .filter_map(|i| Some((i.name.clone(), i.on_demand_price?)))
                    .collect();
                (builtin, false)
            }
        };
        let prices = Arc::new(value.0.clone());
        lock(&self.caches).on_demand = Some(Cached {
            at: now,
            value: Arc::new(value),
        });
        Ok(prices)
    }

    /// Latest spot price per (instance type, zone); cached for `cache_ttl`.
    pub async fn spot_prices(&self) -> Result<Arc<HashMap<(String, String), f64>>, CloudError> {
        let now = self.clock.now();
        if let Some(c) = &lock(&self.caches).spot {
            if now.duration_since(c.at) < self.config.cache_ttl {
                return Ok(c.value.clone());
            }
        }
        let prices = self
            .call("DescribeSpotPriceHistory", || {
                self.api.describe_spot_price_history()
            })
            .await?;
        let value: Arc<HashMap<(String, String), f64>> = Arc::new(
            prices
                .into_iter()
                .map(|p| ((p.instance_type, p.zone), p.price))
                .collect(),
        );
        lock(&self.caches).spot = Some(Cached {
            at: now,
            value: value.clone(),
        });
        Ok(value)
    }

    /// The AMI of a family, architecture and accelerator variant from its SSM parameter;
    /// cached for `cache_ttl`.
    pub async fn ami(
        &self,
        family: &str,
        arch: Architecture,
        accelerator: Accelerator,
    ) -> Result<String, CloudError> {
        let parameter = ami_parameter(
            &self.config.ssm_parameter_prefix,
            family,
            &self.config.kubernetes_version,
            arch,
            accelerator,
        )
        .ok_or_else(|| CloudError::UnknownAmiFamily {
            family: family.to_string(),
            known: SUPPORTED_AMI_FAMILIES.to_vec(),
        })?;
        let now = self.clock.now();
        if let Some(c) = lock(&self.caches).amis.get(&parameter) {
            if now.duration_since(c.at) < self.config.cache_ttl {
                return Ok(c.value.as_ref().clone());
            }
        }
        let ami = self
            .call("GetParameter", || self.api.get_parameter(&parameter))
            .await
            .map_err(|e| CloudError::AmiNotFound {
                family: family.to_string(),
                parameter: parameter.clone(),
                message: e.to_string(),
            })?;
        lock(&self.caches).amis.insert(
            parameter,
            Cached {
                at: now,
                value: Arc::new(ami.clone()),
            },
        );
        Ok(ami)
    }

    /// The AMIs an `amiSelector` matches, newest first; cached for `cache_ttl`. None is an
    /// error naming the selector.
    pub async fn selected_amis(
        &self,
        family: &str,
        selector: &BTreeMap<String, String>,
    ) -> Result<Arc<Vec<Image>>, CloudError> {
        let key = describe_selector(selector);
        let now = self.clock.now();
        if let Some(c) = lock(&self.caches).selected_amis.get(&key) {
            if now.duration_since(c.at) < self.config.cache_ttl {
                return Ok(c.value.clone());
            }
        }
        let q = image_query(selector);
        let mut images = self
            .call("DescribeImages", || {
                self.api
                    .describe_images(q.filters.clone(), q.owners.clone(), q.image_ids.clone())
            })
            .await?;
        if images.is_empty() {
            return Err(CloudError::AmiNotFound {
                family: family.to_string(),
                parameter: format!("amiSelector {key}"),
                message: "DescribeImages matched no AMI; check the selector's tags, name, \
                          owners or IDs"
                    .into(),
            });
        }
        images.sort_by(|a, b| {
            b.creation_date
                .cmp(&a.creation_date)
                .then_with(|| a.id.cmp(&b.id))
        });
        let value = Arc::new(images);
        lock(&self.caches).selected_amis.insert(
            key,
            Cached {
                at: now,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// The IAM instance profile `name` (set at `field`, named in errors), which must exist and
    /// have a role; cached for `cache_ttl` once it does, misses are looked up again each time.
    pub async fn instance_profile(
        &self,
        field: &str,
        name: &str,
    ) -> Result<Arc<InstanceProfileInfo>, CloudError> {
        let now = self.clock.now();
        if let Some(c) = lock(&self.caches).instance_profiles.get(name) {
            if now.duration_since(c.at) < self.config.cache_ttl {
                return Ok(c.value.clone());
            }
        }
        let found = self
            .call("GetInstanceProfile", || self.api.instance_profile(name))
            .await?;
        let invalid = |problem: String| CloudError::InvalidInstanceProfile {
            field: field.to_string(),
            name: name.to_string(),
            problem,
        };
        let Some(profile) = found else {
            return Err(invalid(
                "no IAM instance profile of that name exists (GetInstanceProfile: NoSuchEntity); \
                 create it or fix the name"
                    .into(),
            ));
        };
        if profile.roles.is_empty() {
            return Err(invalid(format!(
                "IAM instance profile {} has no role attached, so its instances would have no \
                 credentials to join the cluster; add the node role to it",
                profile.arn
            )));
        }
        let value = Arc::new(profile);
        lock(&self.caches).instance_profiles.insert(
            name.to_string(),
            Cached {
                at: now,
                value: value.clone(),
            },
        );
        Ok(value)
    }

    /// Drops the templates a fleet request named from the cache: they are looked up (and
    /// created) again on the next use.
    pub fn forget_launch_templates(&self, fleet: &FleetRequest) {
        let mut caches = lock(&self.caches);
        for c in &fleet.configs {
            caches.launch_templates.remove(&c.launch_template_name);
        }
    }

    /// Filters for our launch templates: the cluster tag, our managed-by tag and a provisioner
    /// tag (what the IAM policy lets us delete).
    fn owned_template_filters(&self) -> Vec<Filter> {
        vec![
            Filter::new(
                &format!("tag:{}", cluster_tag_key(&self.config.cluster_name)),
                &["owned"],
            ),
            Filter::new(
                &format!("tag:{MANAGED_BY_TAG}"),
                &[&self.config.cluster_name],
            ),
            Filter::new("tag-key", &[PROVISIONER_TAG]),
        ]
    }

    /// Fills the launch-template cache with our templates found by tag (at start-up), so they
    /// are reused without a lookup and collected when they go unused; returns how many.
    pub async fn load_launch_templates(&self) -> Result<usize, CloudError> {
        let filters = self.owned_template_filters();
        let found = self
            .call("DescribeLaunchTemplates", || {
                self.api.describe_launch_templates(filters.clone())
            })
            .await?;
        let now = self.clock.now();
        let mut caches = lock(&self.caches);
        for t in &found {
            caches
                .launch_templates
                .entry(t.name.clone())
                .or_insert_with(|| t.id.clone());
            caches.template_used.entry(t.name.clone()).or_insert(now);
        }
        Ok(found.len())
    }

    /// Deletes our launch templates that no launch used for `launch_template_idle` (counted
    /// from when this process first saw them), at most once per
    /// `launch_template_gc_interval`; returns the names deleted. A template deleted while a
    /// launch is about to use it is recreated by that launch.
    pub async fn collect_launch_templates(&self) -> Result<Vec<String>, CloudError> {
        let now = self.clock.now();
        {
            let mut caches = lock(&self.caches);
            if caches
                .template_gc_at
                .is_some_and(|t| now.duration_since(t) < self.config.launch_template_gc_interval)
            {
                return Ok(vec![]);
            }
            caches.template_gc_at = Some(now);
        }
        let filters = self.owned_template_filters();
        let found = self
            .call("DescribeLaunchTemplates", || {
                self.api.describe_launch_templates(filters.clone())
            })
            .await?;
        let idle: Vec<_> = {
            let mut caches = lock(&self.caches);
            let listed: BTreeSet<&str> = found.iter().map(|t| t.name.as_str()).collect();
            // Forget what is gone, so the map does not grow without bound.
            caches
                .template_used
                .retain(|name, _| listed.contains(name.as_str()));
            found
                .iter()
                .filter(|t| {
                    let used = *caches.template_used.entry(t.name.clone()).or_insert(now);
                    now.duration_since(used) >= self.config.launch_template_idle
                })
                .cloned()
                .collect()
        };
        let mut deleted = Vec::new();
        for t in idle {
            match self
                .call("DeleteLaunchTemplate", || {
                    self.api.delete_launch_template(&t.id)
                })
                .await
            {
                Ok(()) => {}
                Err(e) if e.code().is_some_and(|c| c.contains("NotFound")) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(template = t.name.as_str(), "deleted unused launch template");
            let mut caches = lock(&self.caches);
            caches.launch_templates.remove(&t.name);
            caches.template_used.remove(&t.name);
            deleted.push(t.name);
        }
        Ok(deleted)
    }

    /// Finds or creates the launch template for a spec; its name carries the content hash.
    pub async fn ensure_launch_template(
        &self,
        spec: &LaunchTemplateSpec,
    ) -> Result<String, CloudError> {
        let now = self.clock.now();
        {
            let mut caches = lock(&self.caches);
            caches.template_used.insert(spec.name.clone(), now);
            if let Some(id) = caches.launch_templates.get(&spec.name) {
                return Ok(id.clone());
            }
        }
        let found = self
            .call("DescribeLaunchTemplates", || {
                self.api.find_launch_template(&spec.name)
            })
            .await?;
        let id = match found {
            Some(id) => id,
            None => {
                let created = self
                    .call("CreateLaunchTemplate", || {
                        self.api.create_launch_template(spec)
                    })
                    .await;
                match created {
                    Ok(id) => id,
                    // Another replica created it first.
                    Err(e)
                        if e.code() == Some("InvalidLaunchTemplateName.AlreadyExistsException") =>
                    {
                        self.call("DescribeLaunchTemplates", || {
                            self.api.find_launch_template(&spec.name)
                        })
                        .await?
                        .ok_or(e)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        lock(&self.caches)
            .launch_templates
            .insert(spec.name.clone(), id.clone());
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ami_selectors_become_describe_images_queries() {
        let sel: BTreeMap<String, String> = [
            ("aws::name".to_string(), "my-ami-*".to_string()),
            ("team".to_string(), "a, b".to_string()),
            ("golden".to_string(), "*".to_string()),
        ]
        .into();
        let q = image_query(&sel);
        assert_eq!(
            q.filters,
            vec![
                Filter::new("name", &["my-ami-*"]),
                Filter::new("tag-key", &["golden"]),
                Filter::new("tag:team", &["a", "b"]),
            ]
        );
        // A name without owners: this account's and Amazon's only.
        assert_eq!(q.owners, ["self", "amazon"]);
        let sel: BTreeMap<String, String> = [
            ("aws::name".to_string(), "x".to_string()),
            ("aws::owners".to_string(), "123456789012,amazon".to_string()),
        ]
        .into();
        assert_eq!(image_query(&sel).owners, ["123456789012", "amazon"]);
        let sel: BTreeMap<String, String> =
            [("aws-ids".to_string(), "ami-1, ami-2".to_string())].into();
        let q = image_query(&sel);
        assert_eq!(q.image_ids, ["ami-1", "ami-2"]);
        assert!(q.owners.is_empty() && q.filters.is_empty());
    }

    #[test]
    fn selectors_become_filters() {
        let mut sel = BTreeMap::new();
        sel.insert("karpenter.sh/discovery".to_string(), "demo".to_string());
        sel.insert("aws-ids".to_string(), "subnet-1, subnet-2".to_string());
        sel.insert("role".to_string(), "*".to_string());
        sel.insert("Name".to_string(), "private-a, private-b,".to_string());
        let f = selector_filters(&sel, "subnet-id");
        assert_eq!(
            f,
            vec![
                Filter::new("tag:Name", &["private-a", "private-b"]),
                Filter::new("subnet-id", &["subnet-1", "subnet-2"]),
                Filter::new("tag:karpenter.sh/discovery", &["demo"]),
                Filter::new("tag-key", &["role"]),
            ]
        );
    }
}
