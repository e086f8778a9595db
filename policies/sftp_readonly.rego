# Read-only sftp for auditors (request stage): they may list and download, but every mutating
# operation is refused with SSH_FX_PERMISSION_DENIED and never reaches the server.
# `write` is an open for write, create or truncate.
package formal.v2

import rego.v1

_sftp_mutations := {"write", "remove", "rename", "mkdir", "rmdir", "setstat"}

request_block contains msg if {
	input.request.kind == "sftp"
	input.request.operation in _sftp_mutations
	"auditors" in input.user.groups
	msg := sprintf("auditors have read-only sftp (%s %s refused)", [input.request.operation, input.request.path])
}

# The same auditors may not run commands either (a shell is still theirs to read logs with).
request_block contains "auditors may not run commands" if {
	input.request.kind == "exec"
	"auditors" in input.user.groups
}
