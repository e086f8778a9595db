package formal.v2

import rego.v1

ec2_input(tags, groups) := with_input({
	"resource": {"name": "app-prod", "type": "ec2", "tags": {}},
	"ec2": {
		"instance_id": "i-0abc", "instance_arn": "arn:aws:ec2:eu-west-1:123456789012:instance/i-0abc",
		"region": "eu-west-1", "account_id": "123456789012", "state": "running", "tags": tags,
	},
	"user": {"groups": groups},
})

test_prod_needs_oncall if {
	d := session with input as ec2_input({"env": "prod"}, ["dev"])
	d.action == "block"
	d.message == "production instances need the oncall group"
}

test_prod_with_oncall if {
	session.action == "allow" with input as ec2_input({"env": "prod"}, ["dev", "oncall"])
}

test_staging_for_everyone if {
	session.action == "allow" with input as ec2_input({"env": "staging"}, [])
}

test_deny_tag_closes_instance if {
	d := session with input as ec2_input({"env": "prod", "sshgate:deny": "true"}, ["oncall"])
	d.message == "instance i-0abc is closed to ssh"
}

test_both_messages_when_both_apply if {
	d := session with input as ec2_input({"env": "prod", "sshgate:deny": "true"}, [])
	d.message == "instance i-0abc is closed to ssh; production instances need the oncall group"
}

test_ssh_resources_unaffected if {
	session.action == "allow" with input as with_input({"resource": {"tags": {"env": "prod"}}})
}
