# Port-forward allow-list (request stage): `ssh -L` may reach only these host:port targets.
# `input.request.host` / `port` are where the forward connects: an IP address in its canonical
# form however the client spelled it, a name as sent (resolved on the resource; docs/policy.md).
package formal.v2

import rego.v1

forward_allow_list := {
	"127.0.0.1:8080", # the resource's own admin UI
	"db.internal:5432",
}

# Any port on hosts under this suffix, for the dba group.
forward_dba_suffix := ".db.internal"

request_block contains msg if {
	input.request.kind == "port_forward"
	target := sprintf("%s:%d", [input.request.host, input.request.port])
	not target in forward_allow_list
	not _forward_dba
	msg := sprintf("port forwarding to %s is not allowed", [target])
}

_forward_dba if {
	"dba" in input.user.groups
	endswith(input.request.host, forward_dba_suffix)
}
