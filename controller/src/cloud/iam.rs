//! The IAM actions the AWS cloud provider calls, in one place.
//!
//! `manifests/iam/controller-policy.json` grants exactly these; a test fails when the two drift.
//! The policy is least privilege: `iam:PassRole` only on the node role and only to EC2,
//! `ec2:CreateTags` only while creating (fleets, instances, launch templates), termination of
//! instances and deletion of launch templates only when tagged with this cluster and a
//! provisioner, SSM reads only of the public AMI
//! parameters under `/aws/service/`. It takes two parameters, `${cluster_name}` and
//! `${node_role_arn}` (Terraform `templatefile` syntax; [`render_policy`] fills them too).
//! Spot launches also need the EC2 Spot service-linked role
//! (`aws iam create-service-linked-role --aws-service-name spot.amazonaws.com`, once per account);
//! the policy does not grant creating it.

/// Every IAM action the controller's AWS provider needs, sorted.
///
/// `ec2:RunInstances`, `ec2:CreateTags` and `iam:PassRole` are not called directly: EC2
/// authorises CreateFleet (with tags and an instance profile) against them.
pub const IAM_ACTIONS: &[&str] = &[
    "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate",
    "ec2:CreateTags",
    "ec2:DeleteLaunchTemplate",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "iam:GetInstanceProfile",
    "iam:PassRole",
    "pricing:GetProducts",
    "ssm:GetParameter",
];

/// The controller policy document as committed under `manifests/iam/`.
pub const CONTROLLER_POLICY_JSON: &str =
    include_str!("../../../manifests/iam/controller-policy.json");

/// Why a policy could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// A parameter is empty or not what IAM expects.
    #[error("policy parameter {field} is invalid ({value:?}): {fix}")]
    Parameter {
        /// The parameter.
        field: &'static str,
        /// The value given.
        value: String,
        /// What to give instead.
        fix: &'static str,
    },
}

/// The committed policy with its parameters filled: the cluster name (as in the
/// `kubernetes.io/cluster/<name>` tag) and the ARN of the node role the instance profiles carry.
pub fn render_policy(cluster_name: &str, node_role_arn: &str) -> Result<String, PolicyError> {
    let ok_name = !cluster_name.is_empty()
        && cluster_name.len() <= 100
        && cluster_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok_name {
        return Err(PolicyError::Parameter {
            field: "cluster_name",
            value: cluster_name.to_string(),
            fix: "give the EKS cluster name: 1 to 100 letters, digits, '-' or '_'",
        });
    }
    let ok_arn = node_role_arn.starts_with("arn:")
        && node_role_arn.contains(":iam::")
        && node_role_arn.contains(":role/")
        && !node_role_arn.contains(['"', '\\', '*']);
    if !ok_arn {
        return Err(PolicyError::Parameter {
            field: "node_role_arn",
            value: node_role_arn.to_string(),
            fix: "give the node role's ARN, e.g. arn:aws:iam::111122223333:role/KarpenterNodeRole-demo (no wildcards)",
        });
    }
    Ok(CONTROLLER_POLICY_JSON
        .replace("${cluster_name}", cluster_name)
        .replace("${node_role_arn}", node_role_arn))
}

/// The actions the committed policy allows, sorted and deduplicated.
pub fn policy_actions(policy_json: &str) -> Result<Vec<String>, serde_json::Error> {
    let doc: serde_json::Value = serde_json::from_str(policy_json)?;
    let mut actions: Vec<String> = doc["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::String(a) => vec![a.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        })
        .collect();
    actions.sort();
    actions.dedup();
    Ok(actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_grants_exactly_the_actions_the_code_calls() {
        let granted = policy_actions(CONTROLLER_POLICY_JSON).unwrap();
        let mut called: Vec<String> = IAM_ACTIONS.iter().map(|s| s.to_string()).collect();
        called.sort();
        assert_eq!(
            granted, called,
            "manifests/iam/controller-policy.json and cloud::iam::IAM_ACTIONS disagree"
        );
    }

    fn statement_for<'a>(doc: &'a serde_json::Value, action: &str) -> &'a serde_json::Value {
        let found: Vec<&serde_json::Value> = doc["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["Action"].as_array().unwrap().iter().any(|a| a == action))
            .collect();
        assert_eq!(found.len(), 1, "{action} is granted by one statement");
        found[0]
    }

    #[test]
    fn the_rendered_policy_is_least_privilege() {
        let arn = "arn:aws:iam::111122223333:role/KarpenterNodeRole-demo";
        let text = render_policy("demo", arn).unwrap();
        assert!(!text.contains("${"), "every parameter is filled");
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let pass = statement_for(&doc, "iam:PassRole");
        assert_eq!(pass["Resource"], arn);
        assert_eq!(
            pass["Condition"]["StringEquals"]["iam:PassedToService"],
            "ec2.amazonaws.com"
        );
        let tags = statement_for(&doc, "ec2:CreateTags");
        let actions = &tags["Condition"]["StringEquals"]["ec2:CreateAction"];
        assert_eq!(
            actions,
            &serde_json::json!(["CreateFleet", "RunInstances", "CreateLaunchTemplate"])
        );
        for action in ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"] {
            let st = statement_for(&doc, action);
            assert_eq!(
                st["Condition"]["StringEquals"]["ec2:ResourceTag/kubernetes.io/cluster/demo"],
                "owned",
                "{action}"
            );
            assert_eq!(
                st["Condition"]["StringLike"]["ec2:ResourceTag/karpenter.sh/provisioner-name"], "*",
                "{action}"
            );
        }
        let ssm = statement_for(&doc, "ssm:GetParameter");
        assert_eq!(ssm["Resource"], "arn:aws:ssm:*::parameter/aws/service/*");
        // Nothing that writes is granted on every resource without a condition, but the
        // creating calls themselves (their tags and role are conditioned above).
        for st in doc["Statement"].as_array().unwrap() {
            if st["Resource"] == "*" && st["Condition"].is_null() {
                for a in st["Action"].as_array().unwrap() {
                    let a = a.as_str().unwrap();
                    let ok = a.contains(":Describe")
                        || a == "iam:GetInstanceProfile"
                        || a == "pricing:GetProducts"
                        || [
                            "ec2:CreateFleet",
                            "ec2:CreateLaunchTemplate",
                            "ec2:RunInstances",
                        ]
                        .contains(&a);
                    assert!(ok, "{a} is granted on * without a condition");
                }
            }
        }
    }

    #[test]
    fn bad_policy_parameters_name_the_field() {
        let arn = "arn:aws:iam::111122223333:role/KarpenterNodeRole-demo";
        for bad in ["", "a b", "x\"y"] {
            let err = render_policy(bad, arn).unwrap_err();
            assert!(err.to_string().contains("cluster_name"), "{err}");
        }
        for bad in ["", "KarpenterNodeRole", "arn:aws:iam::111122223333:role/*"] {
            let err = render_policy("demo", bad).unwrap_err();
            assert!(err.to_string().contains("node_role_arn"), "{err}");
        }
    }

    #[test]
    fn actions_are_sorted_and_unique() {
        assert!(IAM_ACTIONS.windows(2).all(|w| w[0] < w[1]));
    }
}
