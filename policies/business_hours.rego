# Business hours for contractors: Monday to Friday, 08:00 to 18:00 UTC, from `input.time`
# (the gateway's clock at the decision, so tests can pin it).
package formal.v2

import rego.v1

session_block contains "contractors may connect Monday to Friday, 08:00-18:00 UTC" if {
	"contractors" in input.user.groups
	not _business_hours
}

_business_hours if {
	ns := input.time.unix * 1000000000
	not time.weekday(ns) in {"Saturday", "Sunday"}
	[hour, _, _] := time.clock([ns, "UTC"])
	hour >= 8
	hour < 18
}
