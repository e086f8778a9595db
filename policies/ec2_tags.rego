# EC2 rules on the instance's own tags (`input.ec2` is present only for ec2 resources, filled
# from DescribeInstances at connect time, so tags set in AWS count, not only the config's).
package formal.v2

import rego.v1

# Production instances: only the on-call group.
session_block contains "production instances need the oncall group" if {
	input.ec2.tags.env == "prod"
	not "oncall" in input.user.groups
}

# Instances tagged `sshgate:deny=true` are closed to everyone, e.g. while under investigation.
session_block contains msg if {
	input.ec2.tags["sshgate:deny"] == "true"
	msg := sprintf("instance %s is closed to ssh", [input.ec2.instance_id])
}
