"""Recording on vs off through the gateway (issue 4), in one run on loopback.

Exec streaming text (`yes`) and an scp upload, each through a gateway that records (the product)
and through one started with a recorder that keeps nothing (bench only: sshgate itself cannot
turn recording off). Targets: exec >= 0.9x, scp >= 0.97x.
Run as root: .venv/bin/python -m bench.bench_recording_gateway [--size-mb 512]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.gateway import Client, GatewayProcess

from bench.common import bench_env

NO_RECORDING = (
    "import sshgate.gateway.server as s, sshgate.recording.recorder as r; "
    "s.build_recorder = lambda config: r.NullRecorder(); "
    "from sshgate.cli import main; main(['serve', '--config', {config!r}])"
)


class UnrecordedGateway(GatewayProcess):
    def argv(self) -> list[str]:
        return [sys.executable, "-c", NO_RECORDING.format(config=str(self.config_path))]


def measure(client: Client, size_mb: int, payload: Path) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run(
        client.ssh_argv("alice+web-1", f"yes | head -c {size_mb}M"), stdout=subprocess.DEVNULL, check=True
    )
    exec_rate = size_mb / (time.perf_counter() - start)
    start = time.perf_counter()
    client.scp("alice+web-1", str(payload), "gw:/tmp/sshgate-bench-scp.bin")
    scp_rate = payload.stat().st_size / 1e6 / (time.perf_counter() - start)
    return exec_rate, scp_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=512)
    args = parser.parse_args()
    with bench_env() as env:
        payload = env.root / "payload.bin"
        payload.write_bytes(os.urandom(args.size_mb << 20))
        rates = {}
        for name, cls in (("recording", GatewayProcess), ("no recording", UnrecordedGateway)):
            gw = cls(env.root / name.replace(" ", "-"), env.config()).start()
            try:
                rates[name] = measure(
                    Client(gw, env.keys.alice, env.root / f"c-{len(rates)}"), args.size_mb, payload
                )
                print(
                    f"{name:<13} exec (yes) {rates[name][0]:6.0f} MB/s   scp upload {rates[name][1]:6.0f} MB/s"
                )
            finally:
                gw.stop()
        size = sum(f.stat().st_size for f in (env.root / "recording/data/recordings").rglob("*.cast"))
        on, off = rates["recording"], rates["no recording"]
        print(
            f"recording on / off: exec {on[0] / off[0]:.2f}x (target >= 0.9x), scp {on[1] / off[1]:.2f}x (target >= 0.97x)"
        )
        print(f"recording size: {size / (args.size_mb << 20):.2f} MB per MB of terminal output")
        Path("/tmp/sshgate-bench-scp.bin").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
