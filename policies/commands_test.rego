package formal.v2

import rego.v1

exec(command, groups) := with_input({"user": {"groups": groups}, "request": {"kind": "exec", "command": command}})

test_reboot_needs_sre if {
	d := request with input as exec("sudo reboot", ["dev"])
	d.message == `"sudo reboot" needs the sre group`
}

test_sre_may_reboot if {
	request.action == "allow" with input as exec("shutdown -h now", ["sre"])
}

test_other_commands if {
	request.action == "allow" with input as exec("uptime", ["dev"])
	request.action == "allow" with input as exec("echo reboot", ["dev"])
}

test_shell_program_is_a_command if {
	d := request with input as with_input({"user": {"groups": ["dev"]}, "request": {"kind": "shell", "command": "sudo poweroff"}})
	d.message == `"sudo poweroff" needs the sre group`
	request.action == "allow" with input as with_input({"user": {"groups": ["dev"]}, "request": {"kind": "shell"}})
}
