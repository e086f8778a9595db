# Shared test input (an allowed session of alice on an ssh resource) and tests of the composition.
package formal.v2

import rego.v1

base_input := {
	"stage": "session",
	"user": {"type": "human", "email": "alice@corp.com", "provider": "formal", "login": "alice", "groups": ["dev"]},
	"native_user": "ubuntu",
	"native_user_source": "group",
	"resource": {"name": "web-1", "type": "ssh", "hostname": "10.0.0.5", "port": 22, "tags": {}},
	"connection": {
		"client_ip": "203.0.113.7", "client_version": "SSH-2.0-OpenSSH_9.2", "auth_method": "publickey",
		"request": "shell", "pty": true,
	},
	# Wednesday 2026-09-16 10:00 UTC: inside business hours.
	"time": {"unix": 1789552800, "rfc3339": "2026-09-16T10:00:00Z"},
}

# base_input with `changes` merged in (recursively, as object.union does).
with_input(changes) := object.union(base_input, changes)

test_nothing_blocked_allows if {
	session == {"action": "allow"} with input as base_input
}

test_all_messages_are_shown_sorted if {
	session == {
		"action": "block",
		"type": "block_with_formal_message",
		"message": "a; b",
	} with data.formal.v2.session_block as {"b", "a"}
}

test_request_allowed_when_nothing_blocks if {
	request == {"action": "allow"} with input as with_input({"request": {"kind": "exec", "command": "uptime"}})
}
