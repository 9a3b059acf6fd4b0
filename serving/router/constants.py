"""Fixed values of the built-in router engine, with units in their names and why each was chosen.

The defaults an operator tunes (health interval, thresholds, ejection, retries, budget, hedging) live in
`toolkit.config.RouterSettings`, where `mct.toml` and flags override them. What is here is not configurable.
"""

from __future__ import annotations

__all__ = [
    "ADMIN_PREFIX",
    "CLIENT_IDLE_SECONDS",
    "CLIENT_IDLE_SWEEP_SECONDS",
    "DRAIN_IDLE_SECONDS",
    "EWMA_DECAY_SECONDS",
    "HEALTH_JITTER_FRACTION",
    "LATENCY_BUCKETS_SECONDS",
    "MAX_HEADER_BYTES",
    "MAX_PIPELINED_REQUESTS",
    "MAX_RESPONSE_BYTES",
    "METRICS_PATH",
    "RETRY_BUDGET_WINDOW_SECONDS",
    "ROUTED_TO_HEADER",
    "SHUTDOWN_GRACE_SECONDS",
    "UNSEEN_BACKEND_PENALTY",
    "UPSTREAM_IDLE_SECONDS",
    "UPSTREAM_MAX_IDLE_CONNECTIONS",
]

# Paths the router answers itself; everything else is proxied. The model servers' own /metrics are
# scraped from the servers directly.
ADMIN_PREFIX = b"/router/"
METRICS_PATH = b"/metrics"

# The response header naming the backend that answered.
ROUTED_TO_HEADER = b"x-routed-to"

# Peak EWMA forgets a latency sample with this time constant (Finagle's and Linkerd's value): one slow
# answer is smoothed away, a cloud that stays slower loses its traffic within seconds.
EWMA_DECAY_SECONDS = 10.0
# Load of a backend that has requests in flight but has not answered once yet: larger than any real
# load, so a new or returning backend takes one request at a time until its latency is known
# (Finagle's rule) rather than everything the other backends would have taken.
UNSEEN_BACKEND_PENALTY = 1e9

# The retry budget counts requests and retries over this sliding window (Linkerd's TTL): long enough to
# smooth bursts, short enough that a past incident does not keep the budget spent.
RETRY_BUDGET_WINDOW_SECONDS = 10

# Probes are spread by up to this fraction of the interval, so that routers started together do not
# probe every backend in the same millisecond.
HEALTH_JITTER_FRACTION = 0.1

# Upstream keep-alive pool, per backend. Sixty-four idle connections cover hundreds of requests in flight
# at millisecond latencies; more would only hold sockets open on the model servers.
UPSTREAM_MAX_IDLE_CONNECTIONS = 64
# A pooled connection idle for longer is closed instead of reused: uvicorn (the model servers) closes
# keep-alive connections after 5 s, and reusing one it is closing costs a failed write.
UPSTREAM_IDLE_SECONDS = 4.0
# Responses are buffered (a retry needs the whole answer before anything is sent to the client); a
# batch of 10,000 rows of probabilities is about a megabyte, so this only stops a runaway backend.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024

# A client keep-alive connection with no complete request for this long is closed (nginx's default
# keepalive_timeout): long enough for load balancers in front, short enough to bound idle sockets, and
# a request must arrive whole within it, which also stops slow-header attacks.
CLIENT_IDLE_SECONDS = 75.0
# Request line plus headers: 64 KiB is four times what any client sends, and an oversized header block
# is answered 431 before it is buffered.
MAX_HEADER_BYTES = 64 * 1024
# Idle client connections are looked for this often: one task for all of them instead of a timer per
# request, and a connection closed up to five seconds late does not matter.
CLIENT_IDLE_SWEEP_SECONDS = 5.0
# A client pipelining more requests than this stops being read until the router has caught up.
MAX_PIPELINED_REQUESTS = 16

# On SIGTERM, requests in flight get this long to finish (one default per-try timeout plus a retry).
SHUTDOWN_GRACE_SECONDS = 5.0
# While draining, a keep-alive connection closes after its next answer, or once idle this long: pooled
# clients reuse a connection within milliseconds under load, so one idle for a second is not in use.
DRAIN_IDLE_SECONDS = 1.0

# Backend latency histogram: local predictions take about a millisecond, cross-cloud ones tens of
# milliseconds, timeouts seconds.
LATENCY_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
