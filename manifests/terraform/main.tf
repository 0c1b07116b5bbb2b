# Karpenter on an EKS cluster: the controller's IAM role through the cluster's OIDC provider
# (IRSA) with the least-privilege policy of manifests/iam/controller-policy.json, an instance
# profile for the nodes it launches, and the Helm release of manifests/helm/karpenter.

data "aws_eks_cluster" "cluster" {
  name = var.cluster_name
}

locals {
  iam_path = coalesce(var.iam_path, "/")
  # arn:<partition>:iam::<account>:role/<name> of the EKS cluster's role gives the partition and
  # the account of the worker role.
  cluster_role_arn = split(":", data.aws_eks_cluster.cluster.role_arn)
  node_role_arn    = format("arn:%s:iam::%s:role/%s", local.cluster_role_arn[1], local.cluster_role_arn[4], var.worker_iam_role_name)
  provider_url     = replace(coalesce(var.provider_url, data.aws_eks_cluster.cluster.identity[0].oidc[0].issuer), "https://", "")
  # The chart names the controller's ServiceAccount <release>-controller.
  service_account = "${var.helm_name}-controller"
}

module "iam_assumable_role_karpenter" {
  source  = "terraform-aws-modules/iam/aws//modules/iam-assumable-role-with-oidc"
  version = "4.7.0"

  create_role                   = true
  role_name                     = "karpenter-controller-${var.cluster_name}"
  role_path                     = local.iam_path
  role_permissions_boundary_arn = var.permissions_boundary
  provider_url                  = local.provider_url
  oidc_fully_qualified_subjects = ["system:serviceaccount:${var.helm_namespace}:${local.service_account}"]
}

# The controller's policy: exactly the actions the AWS cloud provider calls
# (karpenter::cloud::iam::IAM_ACTIONS), termination only of this cluster's instances,
# iam:PassRole only of the worker role.
resource "aws_iam_policy" "karpenter_contoller" {
  name        = "karpenter-controller-${var.cluster_name}"
  path        = local.iam_path
  description = "Karpenter controller of EKS cluster ${var.cluster_name}"
  policy = templatefile("${path.module}/../iam/controller-policy.json", {
    cluster_name  = var.cluster_name
    node_role_arn = local.node_role_arn
  })
}

resource "aws_iam_role_policy_attachment" "karpenter_contoller_policy_attachment" {
  role       = module.iam_assumable_role_karpenter.iam_role_name
  policy_arn = aws_iam_policy.karpenter_contoller.arn
}

# Session Manager access to the nodes (what the AWS managed AmazonSSMManagedInstanceCore grants).
resource "aws_iam_policy" "ssm_managed_instance" {
  name        = "karpenter-ssm-managed-instance-${var.cluster_name}"
  path        = local.iam_path
  description = "Session Manager on the Karpenter nodes of EKS cluster ${var.cluster_name}"
  policy      = file("${path.module}/ssm-managed-instance-policy.json")
}

resource "aws_iam_role_policy_attachment" "karpenter_ssm_policy" {
  role       = var.worker_iam_role_name
  policy_arn = aws_iam_policy.ssm_managed_instance.arn
}

resource "aws_iam_instance_profile" "karpenter" {
  name = "KarpenterNodeInstanceProfile-${var.cluster_name}"
  path = local.iam_path
  role = var.worker_iam_role_name

  lifecycle {
    precondition {
      condition     = var.worker_iam_role_name != ""
      error_message = "worker_iam_role_name is required: the IAM role of the nodes Karpenter launches."
    }
  }
}

resource "helm_release" "karpenter" {
  name             = var.helm_name
  namespace        = var.helm_namespace
  create_namespace = var.helm_create_namespace
  chart            = "${path.module}/../helm/karpenter"

  values = [yamlencode({
    clusterName     = var.cluster_name
    clusterEndpoint = coalesce(var.cluster_endpoint, data.aws_eks_cluster.cluster.endpoint)
    clusterCABundle = data.aws_eks_cluster.cluster.certificate_authority[0].data
    aws = {
      defaultInstanceProfile = aws_iam_instance_profile.karpenter.name
    }
    serviceAccount = {
      roleArn = module.iam_assumable_role_karpenter.iam_role_arn
    }
  })]

  depends_on = [aws_iam_role_policy_attachment.karpenter_contoller_policy_attachment]
}
