"""Seeds and inspects a moto server for the end-to-end tests (boto3 against 127.0.0.1 only).

  python moto.py ENDPOINT seed CLUSTER SSM_PREFIX K8S_VERSION INSTANCE_PROFILE
      A VPC with two subnets and a security group tagged karpenter.sh/discovery=CLUSTER, an
      instance profile with a role, and the AL2 AMI parameters (amd64, arm64) under SSM_PREFIX.
  python moto.py ENDPOINT instances
      Every instance as JSON: id, state, type, zone, tags.
"""
import json
import sys

import boto3

ENDPOINT, COMMAND = sys.argv[1], sys.argv[2]
if not ENDPOINT.startswith(("http://127.0.0.1:", "http://localhost:")):
    sys.exit(f"refusing a non-local endpoint: {ENDPOINT}")


def client(service):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def seed(cluster, prefix, version, profile):
    ec2 = client("ec2")
    tag = [{"Key": "karpenter.sh/discovery", "Value": cluster}]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = []
    for i, zone in enumerate(["us-east-1a", "us-east-1b"]):
        s = ec2.create_subnet(
            VpcId=vpc,
            CidrBlock=f"10.0.{i}.0/24",
            AvailabilityZone=zone,
            TagSpecifications=[{"ResourceType": "subnet", "Tags": tag}],
        )
        subnets.append(s["Subnet"]["SubnetId"])
    sg = ec2.create_security_group(
        GroupName="nodes",
        Description="nodes",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tag}],
    )["GroupId"]
    iam = client("iam")
    iam.create_role(
        RoleName="KarpenterNodeRole-" + cluster,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    iam.create_instance_profile(InstanceProfileName=profile)
    iam.add_role_to_instance_profile(
        InstanceProfileName=profile, RoleName="KarpenterNodeRole-" + cluster
    )
    images = ec2.describe_images(Owners=["amazon"])["Images"]
    ssm = client("ssm")
    for suffix, image in [("amazon-linux-2", images[0]), ("amazon-linux-2-arm64", images[1])]:
        ssm.put_parameter(
            Name=f"{prefix}/eks/optimized-ami/{version}/{suffix}/recommended/image_id",
            Value=image["ImageId"],
            Type="String",
        )
    print(json.dumps({"subnets": subnets, "securityGroup": sg}))


def instances():
    ec2 = client("ec2")
    out = []
    for r in ec2.describe_instances()["Reservations"]:
        for i in r["Instances"]:
            out.append(
                {
                    "id": i["InstanceId"],
                    "state": i["State"]["Name"],
                    "type": i["InstanceType"],
                    "zone": i["Placement"]["AvailabilityZone"],
                    "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
                }
            )
    print(json.dumps(out))


if COMMAND == "seed":
    seed(*sys.argv[3:7])
elif COMMAND == "instances":
    instances()
else:
    sys.exit(f"unknown command {COMMAND}")
