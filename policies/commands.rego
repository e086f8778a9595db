# Exec commands (request stage): stopping the machine is for the sre group.
# `input.request.command` is the command line exactly as the client sent it.
package formal.v2

import rego.v1

request_block contains msg if {
	input.request.kind == "exec"
	regex.match(`^\s*(sudo\s+)?(shutdown|reboot|halt|poweroff)\b`, input.request.command)
	not "sre" in input.user.groups
	msg := sprintf("%q needs the sre group", [input.request.command])
}
