"""Open-loop load: requests sent at a fixed rate whatever the answers, each one recorded.

A closed loop (a client waiting for each answer before the next request) slows down with the system it
measures and hides an outage; an open loop keeps the schedule, so a stall shows as latency and failures.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["RequestRecord", "drive_load", "failure_cause"]

# Far above the router's per-try timeout times its tries: a request that takes this long has failed.
CLIENT_TIMEOUT_SECONDS = 10.0
# Connections kept open to the router; at a few hundred requests per second the answers take milliseconds.
MAX_CONNECTIONS = 256


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request: when it was sent (seconds since the drill's start), how it ended, who answered."""

    sent_at: float
    seconds: float
    status: int  # 0: no HTTP answer at all
    cause: str | None  # None when it succeeded
    routed_to: str | None
    model_version: str | None

    @property
    def ok(self) -> bool:
        return self.cause is None


def failure_cause(status: int, error: BaseException | None = None) -> str | None:
    """A short, stable name for why a request failed (None for a 2xx answer)."""
    if error is not None:
        if isinstance(error, TimeoutError):
            return "timeout"
        if isinstance(error, aiohttp.ClientConnectorError):
            return "connect"
        if isinstance(error, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            return "disconnected"
        if isinstance(error, aiohttp.ClientOSError):  # e.g. the connection was reset
            return "reset"
        return type(error).__name__
    if 200 <= status < 300:
        return None
    return f"http-{status}"


async def drive_load(url: str, body: dict[str, Any], rps: float, seconds: float, start: float) -> list[RequestRecord]:
    """POST `body` to `url` `rps` times a second for `seconds`, on a schedule from `start` (monotonic)."""
    records: list[RequestRecord] = []
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_SECONDS)
    connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, trust_env=False) as session:

        async def one(scheduled: float) -> None:
            sent = time.monotonic()
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    status = response.status
                    routed_to = response.headers.get("X-Routed-To")
                    version = response.headers.get("X-Model-Version")
                    cause = failure_cause(status)
            except (aiohttp.ClientError, TimeoutError) as error:
                status, routed_to, version, cause = 0, None, None, failure_cause(0, error)
            records.append(RequestRecord(scheduled - start, time.monotonic() - sent, status, cause, routed_to, version))

        tasks = []
        count = int(rps * seconds)
        for index in range(count):
            scheduled = start + index / rps
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return sorted(records, key=lambda record: record.sent_at)
