package formal.v2

import rego.v1

# 2026-09-16 is a Wednesday, 2026-09-19 a Saturday.
at(unix) := with_input({"user": {"groups": ["contractors"]}, "time": {"unix": unix}})

test_contractor_on_wednesday_morning if {
	session.action == "allow" with input as at(1789552800) # 10:00
}

test_contractor_at_opening_and_closing if {
	session.action == "allow" with input as at(1789545600) # 08:00:00
	session.action == "block" with input as at(1789581600) # 18:00:00
}

test_contractor_at_night if {
	d := session with input as at(1789524000) # 02:00
	d.message == "contractors may connect Monday to Friday, 08:00-18:00 UTC"
}

test_contractor_on_saturday if {
	session.action == "block" with input as at(1789812000) # Saturday 10:00
}

test_employees_any_time if {
	session.action == "allow" with input as with_input({"time": {"unix": 1789812000}})
}
