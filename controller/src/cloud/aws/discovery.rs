//! Discovery and caches: subnets and security groups by selector, instance types with zones
//! and prices, spot prices, AMIs from SSM parameters, instance profiles from IAM, launch
//! templates by content hash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::api::AwsProvider;
use crate::cloud::catalog::{builtin_us_east_1, Architecture, AwsInstanceTypeInfo};
use crate::cloud::provider::{describe_selector, lock, CloudError};

use super::api::{
    Ec2Api, Filter, FleetRequest, InstanceProfileInfo, LaunchTemplateSpec, SecurityGroup, Subnet,
};
use super::user_data::{ami_parameter, SUPPORTED_AMI_FAMILIES};
use super::{AwsCloud, Cached, DISCOVERY_TAG, IDS_SELECTOR_KEY};

/// Tags or IDs to describe filters.
fn selector_filters(selector: &BTreeMap<String, String>, id_filter: &str) -> Vec<Filter> {
    selector
        .iter()
        .map(|(k, v)| {
            if k == IDS_SELECTOR_KEY {
                let ids: Vec<&str> = v.split(',').map(str::trim).collect();
                Filter::new(id_filter, &ids)
            } else if v == "*" || v.is_empty() {
                Filter::new("tag-key", &[k])
            } else {
                Filter::new(&format!("tag:{k}"), &[v])
            }
        })
        .collect()
}

// === impl AwsCloud (discovery) ===

impl<A: Ec2Api> AwsCloud<A> {
    fn default_selector(&self) -> BTreeMap<String, String> {
        [(DISCOVERY_TAG.to_string(), self.config.cluster_name.clone())].into()
    }

    /// Subnets matching the provider's selector; an error naming the selector when none do.
    pub async fn subnets(&self, provider: &AwsProvider) -> Result<Vec<Subnet>, CloudError> {
        let selector = provider
            .subnet_selector
            .clone()
            .unwrap_or_else(|| self.default_selector());
        let filters = selector_filters(&selector, "subnet-id");
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
        Ok(subnets)
    }

    /// Security groups matching the provider's selector; an error naming it when none do.
    pub async fn security_groups(
        &self,
        provider: &AwsProvider,
    ) -> Result<Vec<SecurityGroup>, CloudError> {
        let selector = provider
            .security_group_selector
            .clone()
            .unwrap_or_else(|| self.default_selector());
        let filters = selector_filters(&selector, "group-id");
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
        let prices: HashMap<&str, Option<f64>> = builtin_us_east_1()?
            .iter()
            .map(|i| (i.name.as_str(), i.on_demand_price))
            .collect();
        for info in &mut infos {
            info.zones = zones
                .get(&info.name)
                .map(|z| z.iter().cloned().collect())
                .unwrap_or_default();
            info.on_demand_price = prices.get(info.name.as_str()).copied().flatten();
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

    /// The AMI of a family and architecture from its SSM parameter; cached for `cache_ttl`.
    pub async fn ami(&self, family: &str, arch: Architecture) -> Result<String, CloudError> {
        let parameter = ami_parameter(
            &self.config.ssm_parameter_prefix,
            family,
            &self.config.kubernetes_version,
            arch,
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

    /// Finds or creates the launch template for a spec; its name carries the content hash.
    pub async fn ensure_launch_template(
        &self,
        spec: &LaunchTemplateSpec,
    ) -> Result<String, CloudError> {
        if let Some(id) = lock(&self.caches).launch_templates.get(&spec.name) {
            return Ok(id.clone());
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
    fn selectors_become_filters() {
        let mut sel = BTreeMap::new();
        sel.insert("karpenter.sh/discovery".to_string(), "demo".to_string());
        sel.insert("aws-ids".to_string(), "subnet-1, subnet-2".to_string());
        sel.insert("role".to_string(), "*".to_string());
        let f = selector_filters(&sel, "subnet-id");
        assert_eq!(
            f,
            vec![
                Filter::new("subnet-id", &["subnet-1", "subnet-2"]),
                Filter::new("tag:karpenter.sh/discovery", &["demo"]),
                Filter::new("tag-key", &["role"]),
            ]
        );
    }
}
