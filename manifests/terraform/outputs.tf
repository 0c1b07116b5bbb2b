output "hr_manifest" {
  description = "The rendered manifest of the release as JSON (needs `experiments { manifest = true }` in the helm provider)"
  value       = helm_release.karpenter.manifest
}

output "karpenter_iam" {
  description = "IAM policy created for Karpenter's use, and the role that carries it"
  value = {
    policy_arn            = aws_iam_policy.karpenter_contoller.arn
    policy_name           = aws_iam_policy.karpenter_contoller.name
    policy                = aws_iam_policy.karpenter_contoller.policy
    role_arn              = module.iam_assumable_role_karpenter.iam_role_arn
    instance_profile_name = aws_iam_instance_profile.karpenter.name
  }
}
