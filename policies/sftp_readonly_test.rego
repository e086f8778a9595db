package formal.v2

import rego.v1

sftp(operation, groups) := with_input({
	"stage": "request",
	"user": {"groups": groups},
	"connection": {"request": "subsystem", "subsystem": "sftp"},
	"request": {"kind": "sftp", "operation": operation, "path": "/srv/report.csv"},
})

test_auditor_may_not_remove if {
	d := request with input as sftp("remove", ["auditors"])
	d.action == "block"
	d.message == "auditors have read-only sftp (remove /srv/report.csv refused)"
}

test_auditor_may_not_mutate_at_all if {
	every op in _sftp_mutations {
		request.action == "block" with input as sftp(op, ["auditors"])
	}
}

test_auditor_may_read if {
	request.action == "allow" with input as sftp("read", ["auditors"])
}

test_others_may_write if {
	request.action == "allow" with input as sftp("write", ["dev"])
}

test_auditor_may_not_exec if {
	d := request with input as with_input({"user": {"groups": ["auditors"]}, "request": {"kind": "exec", "command": "ls"}})
	d.message == "auditors may not run commands"
}

test_auditor_may_not_send_unknown_extended_requests if {
	d := request with input as with_input({
		"user": {"groups": ["auditors"]},
		"request": {"kind": "sftp", "operation": "extended:copy-file"},
	})
	d.message == "auditors have read-only sftp (extended:copy-file refused)"
}

test_auditor_shell_only_without_a_program if {
	request.action == "allow" with input as with_input({"user": {"groups": ["auditors"]}, "request": {"kind": "shell"}})
	d := request with input as with_input({"user": {"groups": ["auditors"]}, "request": {"kind": "shell", "command": "rm -rf /srv"}})
	d.message == "auditors may not run commands"
}
