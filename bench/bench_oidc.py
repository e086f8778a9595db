"""Sign-in benchmark (issue 14): a key bound by sign-in logs in without the provider.

`ssh GW true` with a key bound by a device-flow sign-in vs the same with a configured key, in one
run, alternating, on loopback; medians and the difference. Also how often the gateway fetched
the provider's JWKS and called its endpoints (the provider's own counts).
Run as root: .venv/bin/python -m bench.bench_oidc [--runs 40]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from tests.support.gateway import Client, GatewayProcess, user_key
from tests.support.oidc import CLIENT_SECRET, OidcProvider, Person, sign_in_lines

from bench.common import bench_env

LOGIN = "idp:okta:human:alice@corp.com+web-1"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    provider = OidcProvider()
    try:
        with bench_env() as env:
            config = env.config()
            config["identities"]["oidc"] = {
                "name": "okta",
                "issuer": provider.issuer,
                "client_id": "sshgate",
                "client_secret": "ENV:OIDC_CLIENT_SECRET",
            }
            gateway = GatewayProcess(env.root / "gateway", config, env={"OIDC_CLIENT_SECRET": CLIENT_SECRET})
            gateway.start()
            try:
                configured = Client(gateway, env.keys.alice, env.root / "configured")
                bound = Client(gateway, user_key(env.root / "keys", "laptop"), env.root / "bound")
                first = subprocess.Popen(bound.ssh_argv(LOGIN, "true"), stderr=subprocess.PIPE, text=True)
                assert first.stderr is not None
                text = "".join(first.stderr.readline() for _ in range(2))
                Person("alice@corp.com").approve(sign_in_lines(text)[2])
                assert first.wait(60) == 0
                calls_after_sign_in = provider.stats()
                times: dict[str, list[float]] = {"configured": [], "bound": []}
                for _ in range(args.runs):
                    times["configured"].append(timed(configured.ssh_argv("alice+web-1", "true")))
                    times["bound"].append(timed(bound.ssh_argv(LOGIN, "true")))
                calls_after_logins = provider.stats()
                jwks_fetches = len(gateway.events("oidc.jwks_fetched"))
            finally:
                gateway.stop()
    finally:
        provider.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, value in medians.items():
        print(f"ssh true, {name} key: median {value:.1f} ms over {args.runs} runs")
    print(f"bound - configured: {medians['bound'] - medians['configured']:+.1f} ms (target: within 5 ms)")
    print(f"gateway JWKS fetches: {jwks_fetches} (one sign-in, {args.runs} bound logins)")
    print(f"provider calls after the sign-in: {calls_after_sign_in}")
    print(f"provider calls after {args.runs} bound logins: {calls_after_logins} (no change = no round trip)")


if __name__ == "__main__":
    main()
