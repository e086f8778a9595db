package formal.v2

import rego.v1

test_john_may_not_be_devops if {
	session.action == "block" with input as with_input({"user": {"email": "john@corp.com"}, "native_user": "devops"})
	session.message == "john@corp.com may not use the devops account" with input as with_input({
		"user": {"email": "john@corp.com"},
		"native_user": "devops",
	})
}

test_alice_may_be_devops if {
	session.action == "allow" with input as with_input({"native_user": "devops"})
}

test_john_may_be_ubuntu if {
	session.action == "allow" with input as with_input({"user": {"email": "john@corp.com"}})
}

test_explicit_root_for_listed_user if {
	session.action == "allow" with input as with_input({"native_user": "root", "native_user_source": "explicit"})
}

test_explicit_root_for_listed_group if {
	session.action == "allow" with input as with_input({
		"user": {"email": "bob@corp.com", "groups": ["sre"]},
		"native_user": "root", "native_user_source": "explicit",
	})
}

test_explicit_root_refused_to_others if {
	d := session with input as with_input({
		"user": {"email": "bob@corp.com"},
		"native_user": "root", "native_user_source": "explicit",
	})
	d.action == "block"
	d.message == "bob@corp.com may not choose the root account explicitly"
}

test_assigned_root_is_not_explicit if {
	session.action == "allow" with input as with_input({
		"user": {"email": "bob@corp.com"},
		"native_user": "root", "native_user_source": "user",
	})
}

test_machine_named_in_message if {
	machine := object.union(object.remove(base_input, {"user"}), {
		"user": {"type": "machine", "name": "ci-bot", "provider": "token", "login": null, "groups": []},
		"native_user": "postgres", "native_user_source": "explicit",
	})
	d := session with input as machine
	d.message == "ci-bot may not choose the postgres account explicitly"
}
