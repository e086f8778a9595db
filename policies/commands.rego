# Commands (request stage): stopping the machine is for the sre group.
# `input.request.command` is the command line exactly as the client sent it: an exec command, or
# the program of `formal <resource> --shell CMD` (kind `shell`; a plain shell has no command).
package formal.v2

import rego.v1

request_block contains msg if {
	input.request.kind in {"exec", "shell"}
	regex.match(`^\s*(sudo\s+)?(shutdown|reboot|halt|poweroff)\b`, input.request.command)
	not "sre" in input.user.groups
	msg := sprintf("%q needs the sre group", [input.request.command])
}
