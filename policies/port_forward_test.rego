package formal.v2

import rego.v1

forward(host, port, groups) := with_input({
	"stage": "request",
	"user": {"groups": groups},
	"request": {"kind": "port_forward", "host": host, "port": port},
})

test_listed_targets if {
	request.action == "allow" with input as forward("127.0.0.1", 8080, [])
	request.action == "allow" with input as forward("db.internal", 5432, [])
}

test_unlisted_target if {
	d := request with input as forward("10.0.0.9", 22, [])
	d.message == "port forwarding to 10.0.0.9:22 is not allowed"
}

test_unlisted_port if {
	request.action == "block" with input as forward("db.internal", 22, [])
}

test_dba_suffix if {
	request.action == "allow" with input as forward("orders.db.internal", 6432, ["dba"])
	request.action == "block" with input as forward("orders.db.internal", 6432, ["dev"])
}
