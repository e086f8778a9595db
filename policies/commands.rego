# Commands (request stage): stopping the machine is for the sre group.
# `input.request.command` is the command line exactly as the client sent it: an exec command, or
# the program of `formal <resource> --shell CMD` (kind `shell`; a plain shell has no command).
# A deny-list like this one guards against mistakes, not against someone set on it: the upstream's
# shell reads the line, so `true; reboot`, `/sbin/reboot` or `$(echo reboot)` get past any pattern,
# and a plain shell runs anything. To restrict what people may run, allow exact commands (see
# docs/policy.md) and refuse `shell` for them.
package formal.v2

import rego.v1

request_block contains msg if {
	input.request.kind in {"exec", "shell"}
	regex.match(`^\s*(sudo\s+)?(shutdown|reboot|halt|poweroff)\b`, input.request.command)
	not "sre" in input.user.groups
	msg := sprintf("%q needs the sre group", [input.request.command])
}
