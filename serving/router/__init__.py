"""The router (`mct route`): one address in front of every cloud's model servers, failing over between them.

This is the built-in engine (pure Python, on uvloop); a production engine (HAProxy) renders the same
engine-neutral `RouterConfig` with the same health, ejection and retry semantics.

    config.py       RouterConfig: backends, tiers, weights, health, ejection, retries; from mct.toml + flags
    policies.py     balancing policies by name: round_robin, weighted, least_outstanding, peak_ewma (default)
    health.py       active checks, passive ejection with back-off and a cap, panic, candidates per tier
    backends.py     each backend's live state, and the pick (candidates, then the policy)
    retry.py        the retry budget
    proxy.py        the hot path: forward, retry on another backend, hedge, answer
    http_server.py  HTTP/1.1 server on asyncio + httptools (llhttp)
    http_client.py  HTTP/1.1 keep-alive upstream pools on asyncio + httptools
    admin.py        /router/status, drain/undrain, /metrics, behind a bearer token
    metrics.py      Prometheus series
    constants.py    fixed values, with units and reasons
    app.py          Router: assembly, start/stop, SIGHUP reload; run_router

Why its own HTTP stack: the proxy's HTTP stack sets its speed. Proxying POSTs to nginx returning a fixed
JSON, wrk with 16 connections, 2 cores, the candidates interleaved (median of 3 runs): Starlette on uvicorn
(uvloop, httptools) with an aiohttp client ~7,400 req/s; aiohttp server and ClientSession (uvloop)
~9,200; an httptools server with an aiohttp client ~15,300; this package (httptools both sides, with
its policy, health, retries and metrics) ~29,000; nginx as the same proxy ~49,000. At one connection it
adds 0.03-0.08 ms at the median (`bench/router_vs_nginx.py`).
"""
