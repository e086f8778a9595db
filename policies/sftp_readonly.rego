# Read-only sftp for auditors (request stage): they may list and download, but every mutating
# operation is refused with SSH_FX_PERMISSION_DENIED and never reaches the server.
# `write` is an open for write, create or truncate, a symlink or a hard link; `setstat` covers
# chmod, chown and touch (also `chmod -h`); `extended:<name>` is a request the gateway does not know.
package formal.v2

import rego.v1

_sftp_mutations := {"write", "remove", "rename", "mkdir", "rmdir", "setstat"}

request_block contains msg if {
	input.request.kind == "sftp"
	_sftp_readonly_refused(input.request.operation)
	"auditors" in input.user.groups
	what := trim_space(sprintf("%s %s", [input.request.operation, object.get(input.request, "path", "")]))
	msg := sprintf("auditors have read-only sftp (%s refused)", [what])
}

_sftp_readonly_refused(operation) if operation in _sftp_mutations

_sftp_readonly_refused(operation) if startswith(operation, "extended:")

# The same auditors may not run commands either (a plain shell is still theirs to read logs with,
# but `--shell CMD` is a command).
request_block contains "auditors may not run commands" if {
	input.request.kind == "exec"
	"auditors" in input.user.groups
}

request_block contains "auditors may not run commands" if {
	input.request.kind == "shell"
	input.request.command
	"auditors" in input.user.groups
}
