"""The one retry policy of every storage backend: bounded attempts, jittered exponential backoff, a deadline.

Each backend translates its SDK's exceptions into `toolkit.storage.errors` in one function and runs every
request through `call`. A translated `StorageUnavailable` (connection refused or reset, timeout, 5xx,
throttling) is transient and retried here; any other error is raised at once. The SDKs' own retries are
switched off (boto3 one attempt, google `retry=None`, azure `retry_total=0`) so that this module alone
decides how long a failing request takes: at most `RETRY_ATTEMPTS` attempts, none started after
`RETRY_DEADLINE_SECONDS`, each bounded by the timeouts below. A service that refuses connections is
reported in about 1 s; one that drops packets in at most about 10 s.

A retried write whose first attempt landed before the connection broke is simply written again (`put`),
or, for `put_if`, reported as `PreconditionFailed`: callers re-read and find their own value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from toolkit.storage.errors import StorageError, StorageUnavailable

__all__ = [
    "CONNECT_TIMEOUT_SECONDS",
    "READ_TIMEOUT_SECONDS",
    "RETRY_ATTEMPTS",
    "RETRY_BASE_DELAY_SECONDS",
    "RETRY_DEADLINE_SECONDS",
    "RETRY_MAX_DELAY_SECONDS",
    "backoff_seconds",
    "call",
]

T = TypeVar("T")

# The first try and three retries: enough to ride out a throttling burst or a dropped connection, few
# enough that a service that is really down is reported in seconds rather than minutes.
RETRY_ATTEMPTS = 4
# Ceiling of the first delay, doubled per retry; the delay is drawn uniformly below it ("full jitter") so
# that many sync workers throttled together do not retry in lock-step. Sleeps total at most 0.25+0.5+1 s.
RETRY_BASE_DELAY_SECONDS = 0.25
# No single delay grows beyond this, whatever RETRY_ATTEMPTS becomes.
RETRY_MAX_DELAY_SECONDS = 2.0
# No new attempt starts this long after the first began: bounds the total when every attempt waits out a
# connect timeout (4 x 2 s + sleeps stays under it) and keeps an outage from stalling a sync for minutes.
RETRY_DEADLINE_SECONDS = 10.0
# TCP connect: a reachable endpoint, cloud or emulator, connects in milliseconds; 2 s allows a slow network
# and keeps a black-holed address from eating the deadline in one attempt.
CONNECT_TIMEOUT_SECONDS = 2.0
# Waiting for a response byte: a service may take seconds to commit a large multipart or block upload;
# a server silent for 20 s is treated as failed.
READ_TIMEOUT_SECONDS = 20.0


def backoff_seconds(attempt: int) -> float:
    """The pause after failed attempt number `attempt` (1-based): uniform in [0, capped exponential)."""
    ceiling = min(RETRY_MAX_DELAY_SECONDS, RETRY_BASE_DELAY_SECONDS * 2 ** (attempt - 1))
    return random.uniform(0.0, ceiling)


def call(operation: Callable[[], T], translate: Callable[[Exception], StorageError | None]) -> T:
    """Run `operation`, translating what it raises and retrying transient failures.

    `translate` maps an SDK exception to a storage error, or to None for one it does not know (a bug,
    or a storage error raised deliberately inside `operation`), which is re-raised unchanged.
    """
    started = time.monotonic()
    attempt = 1
    while True:
        try:
            return operation()
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
            if not isinstance(error, StorageUnavailable):
                raise error from exc
            delay = backoff_seconds(attempt)
            elapsed = time.monotonic() - started
            if attempt >= RETRY_ATTEMPTS or elapsed + delay > RETRY_DEADLINE_SECONDS:
                raise StorageUnavailable(f"{error} (gave up after {attempt} attempts in {elapsed:.1f} s)") from exc
        time.sleep(delay)
        attempt += 1
