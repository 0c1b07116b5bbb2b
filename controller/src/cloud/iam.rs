//! The IAM actions the AWS cloud provider calls, in one place.
//!
//! `manifests/iam/controller-policy.json` grants exactly these; a test fails when the two drift.

/// Every IAM action the controller's AWS provider needs, sorted.
///
/// `ec2:RunInstances`, `ec2:CreateTags` and `iam:PassRole` are not called directly: EC2
/// authorises CreateFleet (with tags and an instance profile) against them.
pub const IAM_ACTIONS: &[&str] = &[
    "ec2:CreateFleet",
    "ec2:CreateLaunchTemplate",
    "ec2:CreateTags",
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
    "ssm:GetParameter",
];

/// The controller policy document as committed under `manifests/iam/`.
pub const CONTROLLER_POLICY_JSON: &str =
    include_str!("../../../manifests/iam/controller-policy.json");

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

    #[test]
    fn actions_are_sorted_and_unique() {
        assert!(IAM_ACTIONS.windows(2).all(|w| w[0] < w[1]));
    }
}
