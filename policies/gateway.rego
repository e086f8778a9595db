# The one place that decides: every other file in this directory only adds messages to
# `session_block` (checked once per session) or `request_block` (checked per shell, exec command,
# subsystem, mutating sftp operation and port forward). Files compose because none of them
# defines `session` or `request` itself; add your own rules the same way.
package formal.v2

import rego.v1

# Blocked when any rule says so; the client reads every message, sorted so the text is stable.
session := _gateway_block(session_block) if count(session_block) > 0

session := {"action": "allow"} if count(session_block) == 0

request := _gateway_block(request_block) if count(request_block) > 0

request := {"action": "allow"} if count(request_block) == 0

_gateway_block(messages) := {
	"action": "block",
	"type": "block_with_formal_message",
	"message": concat("; ", sort(messages)),
}
