# Native-user restrictions.
#
# Written in the style of Formal's documentation (`import future.keywords`), to show such
# policies run unchanged; here they add to `session_block` so they compose with the others.
package formal.v2

import future.keywords.if
import future.keywords.in

# Formal's example: john may log in as any native user except devops.
session_block contains "john@corp.com may not use the devops account" if {
	input.native_user == "devops"
	input.user.email == "john@corp.com"
}

# Privileged accounts that may be chosen explicitly (`alice@root@web-1` or `--native-user root`)
# only by the users and groups listed here; everyone else gets them only through an assignment
# in the gateway config. Accounts not listed may be chosen by anyone the resource allows.
explicit_native_users := {
	"root": {"users": {"alice@corp.com"}, "groups": {"sre"}},
	"postgres": {"users": set(), "groups": {"dba"}},
}

session_block contains msg if {
	input.native_user_source == "explicit"
	allowed := explicit_native_users[input.native_user]
	not _native_users_listed(allowed)
	msg := sprintf("%s may not choose the %s account explicitly", [_native_users_who, input.native_user])
}

_native_users_listed(allowed) if input.user.email in allowed.users

_native_users_listed(allowed) if {
	some group in input.user.groups
	group in allowed.groups
}

# Humans have an email, machines a name.
_native_users_who := object.get(input.user, "email", object.get(input.user, "name", "this identity"))
