"""The ``opa`` decision point: an OPA server's Data API, for sidecar deployments.

The server's rule set is not known here, so both stages are always asked (an undefined answer
means ``default_action``). opa-python-client lets raw transport errors through; all of them,
and the configured timeout, deny with "policy unavailable".
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from opa_client import AsyncOpaClient

from sshgate.policy.decision import Decision, Stage
from sshgate.policy.mapping import timed_out, to_decision, unavailable
from sshgate.policy.sources import PolicyLoadError


class OpaDecisionPoint:
    def __init__(self, url: str, default_action: Literal["allow", "block"], timeout_ms: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise PolicyLoadError(f"policies.opa_url {url!r}: expected http(s)://host[:port]")
        self.url = url
        self.default_action = default_action
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000
        # Retries would outlive the timeout; the gateway denies instead and the user retries.
        self._client = AsyncOpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            ssl=parts.scheme == "https",
            timeout=self.timeout_s,
            retries=0,
        )
        self._opened = False

    def has_rule(self, stage: Stage) -> bool:
        return True

    async def decide(self, stage: Stage, input_doc: dict[str, Any]) -> Decision:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if not self._opened:
                    self._opened = True
                    await self._client.__aenter__()
                answer = await self._client.query_rule(input_doc, "formal.v2", stage)
        except TimeoutError:
            what = f"OPA at {self.url} did not answer within {self.timeout_ms} ms"
            return timed_out(stage, what, _since(start))
        except Exception as exc:  # the client raises whatever aiohttp raised
            return unavailable(stage, f"OPA at {self.url}: {type(exc).__name__}: {exc}", _since(start))
        if not isinstance(answer, dict):
            return unavailable(stage, f"OPA at {self.url}: answer is not a JSON object", _since(start))
        return to_decision(stage, answer.get("result"), self.default_action, _since(start))

    async def aclose(self, grace_s: float = 0.0) -> None:
        """Close the client ``grace_s`` from now, when the queries it may still carry have ended."""
        await asyncio.sleep(grace_s)
        if self._opened:
            await self._client.close_connection()


def _since(start: float) -> float:
    return time.perf_counter() - start
