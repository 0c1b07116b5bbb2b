variable "cluster_name" {
  description = "EKS Cluster Name"
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must be an EKS cluster name: letters, digits, '-' and '_', at most 100 characters."
  }
}

variable "cluster_endpoint" {
  description = "Cluster Endpoint (empty: the EKS cluster's endpoint)"
  type        = string
  default     = ""
}

variable "helm_create_namespace" {
  description = "Create Namespace for Karpenter"
  type        = bool
  default     = true
}

variable "helm_name" {
  description = "Helm Name (the release name; objects are named <name>-controller and <name>-webhook)"
  type        = string
  default     = "karpenter"
}

variable "helm_namespace" {
  description = "Helm Chart Install Namespace"
  type        = string
  default     = "karpenter"
}

variable "iam_path" {
  description = "IAM Path if applicable (of the role, the policies and the instance profile; empty: /)"
  type        = string
  default     = ""
}

variable "permissions_boundary" {
  description = "permissions boundary if applicable (ARN of a policy, for the controller's role)"
  type        = string
  default     = ""
}

variable "provider_url" {
  description = "Provider URL (the cluster's OIDC issuer; empty: the EKS cluster's)"
  type        = string
  default     = ""
}

variable "worker_iam_role_name" {
  description = "Worker Nodes IAM Role (its name, at path /: the instance profile's role and the only role the controller may pass)"
  type        = string
  default     = ""
}
