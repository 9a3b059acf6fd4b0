"""The router's decisions, with no network: policies, health and ejection, tiers and panic, the retry
budget, and the proxy's retry and hedging rules (on fake upstream pools)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from serving.router.backends import Backend, BackendSet
from serving.router.config import BackendSpec, EjectionConfig, HealthConfig, RetryConfig
from serving.router.health import HealthTracker, candidates
from serving.router.http_client import ConnectFailed, UpstreamError, UpstreamResponse, UpstreamTimeout
from serving.router.http_server import Request
from serving.router.metrics import RouterMetrics
from serving.router.policies import DEFAULT_POLICY, PeakEwma, Policy, make_policy, policy_names
from serving.router.proxy import Proxy, RoutingTable, Upstream, request_headers
from serving.router.retry import RetryBudget

HEALTH = HealthConfig("/v2/health/ready", 1.0, 0.5, healthy_threshold=2, unhealthy_threshold=2)
EJECTION = EjectionConfig(after_failures=3, base_seconds=5.0, max_seconds=30.0, max_ejected_percent=50)


def backend(name: str, tier: int = 0, weight: float = 1.0, in_flight: int = 0) -> Backend:
    spec = BackendSpec(name, name, f"http://{name}:80", "http", name, 80, "", tier=tier, weight=weight)
    created = Backend(spec)
    created.in_flight = in_flight
    return created


def picks(policy: Policy, candidates: Sequence[Backend], count: int, now: float = 0.0) -> Counter[str]:
    return Counter(policy.select(candidates, now).name for _ in range(count))


# Policies


def test_policies_are_registered_by_name_with_one_default() -> None:
    assert policy_names() == ["least_outstanding", "peak_ewma", "round_robin", "weighted"]
    assert DEFAULT_POLICY == "peak_ewma"
    assert type(make_policy("weighted")).__name__ == "Weighted"
    with pytest.raises(ValueError, match="registered twice"):

        class Again(Policy, name="round_robin"):
            def select(self, candidates: Sequence[Any], now: float) -> Any:
                return candidates[0]


def test_round_robin_takes_each_in_turn() -> None:
    backends = [backend("a"), backend("b"), backend("c", weight=9)]
    assert picks(make_policy("round_robin"), backends, 300) == {"a": 100, "b": 100, "c": 100}


def test_weighted_shares_follow_the_weights_evenly_interleaved() -> None:
    backends = [backend("a", weight=5), backend("b"), backend("c")]
    policy = make_policy("weighted")
    sequence = [policy.select(backends, 0.0).name for _ in range(7)]
    assert Counter(sequence) == {"a": 5, "b": 1, "c": 1}
    assert sequence[:3] != ["a", "a", "a"], "smooth: the heavy backend does not take a burst"
    assert picks(policy, backends, 700) == {"a": 500, "b": 100, "c": 100}


def test_least_outstanding_never_picks_the_busiest_of_three() -> None:
    backends = [backend("idle"), backend("busy", in_flight=9), backend("some", in_flight=2)]
    chosen = picks(make_policy("least_outstanding", random.Random(1)), backends, 600)
    assert chosen["busy"] == 0
    assert chosen["idle"] > chosen["some"] > 0  # the idle one wins every pair it is drawn in


def test_least_outstanding_divides_the_load_by_the_weight() -> None:
    backends = [backend("big", weight=4, in_flight=3), backend("small", in_flight=1)]
    assert picks(make_policy("least_outstanding"), backends, 50) == {"big": 50}


def test_peak_ewma_jumps_to_a_slow_sample_and_decays_towards_fast_ones() -> None:
    ewma = PeakEwma(decay_seconds=10.0)
    ewma.observe(0.010, now=100.0)
    ewma.observe(0.200, now=100.1)
    assert ewma.value(100.1) == pytest.approx(0.200)  # a peak is taken at once
    ewma.observe(0.010, now=110.0)  # one decay period later, a fast sample pulls it down
    assert 0.010 < ewma.value(110.0) < 0.2 * 0.5
    assert ewma.value(200.0) < 0.001, "without samples the estimate fades, so the backend is tried again"


def test_peak_ewma_prefers_the_faster_backend_and_weighs_in_flight_requests() -> None:
    fast, slow = backend("fast"), backend("slow")
    fast.latency.observe(0.002, 0.0)
    slow.latency.observe(0.020, 0.0)
    policy = make_policy("peak_ewma")
    assert picks(policy, [fast, slow], 50, now=0.0) == {"fast": 50}
    fast.in_flight = 20  # 2 ms x 21 in flight costs more than 20 ms x 1
    assert picks(policy, [fast, slow], 50, now=0.0) == {"slow": 50}


def test_peak_ewma_sends_one_request_at_a_time_to_a_backend_it_has_not_measured() -> None:
    known, new = backend("known"), backend("new")
    known.latency.observe(0.005, 0.0)
    policy = make_policy("peak_ewma")
    assert policy.select([known, new], 0.0) is new  # unmeasured and idle: free
    new.in_flight = 1
    assert policy.select([known, new], 0.0) is known  # unmeasured and busy: wait for its first answer


# Active health checks


def test_health_flips_only_after_the_thresholds() -> None:
    tracker, target = HealthTracker(HEALTH, EJECTION), backend("a")
    assert tracker.record_check(target, False, 0.0, "timeout") is None
    assert tracker.record_check(target, True, 1.0) is None
    assert tracker.record_check(target, False, 2.0, "timeout") is None
    assert tracker.record_check(target, False, 3.0, "refused") is False
    assert not target.health.healthy and target.health.last_check_error == "refused"
    assert tracker.record_check(target, True, 4.0) is None
    assert tracker.record_check(target, True, 5.0) is True
    assert target.health.healthy and target.health.last_check_error is None


# Passive ejection


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    tracker = HealthTracker(HEALTH, EJECTION)
    backends = [backend("a"), backend("b"), backend("c")]
    a = backends[0]
    tracker.record_failure(a, 0.0, backends)
    tracker.record_failure(a, 0.0, backends)
    tracker.record_success(a)
    assert tracker.record_failure(a, 0.0, backends) is None
    assert tracker.record_failure(a, 0.0, backends) is None
    assert tracker.record_failure(a, 1.0, backends) == 5.0
    assert a.health.ejected(5.9) and not a.health.available(5.9) and a.health.available(6.0)
    assert a.health.ejections == 1


def test_a_failed_comeback_doubles_the_ejection_up_to_the_maximum() -> None:
    tracker = HealthTracker(HEALTH, EJECTION)
    backends = [backend("a"), backend("b")]
    a = backends[0]
    for _ in range(3):
        tracker.record_failure(a, 0.0, backends)
    lengths = [5.0]
    now = 5.0
    for _ in range(4):  # back from ejection, first try fails: on probation, so ejected again at once
        seconds = tracker.record_failure(a, now, backends)
        assert seconds is not None
        lengths.append(seconds)
        now += seconds
    assert lengths == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert a.health.ejections == 5


def test_a_quiet_period_forgets_the_back_off() -> None:
    tracker = HealthTracker(HEALTH, EJECTION)
    backends = [backend("a"), backend("b")]
    a = backends[0]
    for _ in range(3):
        tracker.record_failure(a, 0.0, backends)
    assert tracker.record_failure(a, 5.0, backends) == 10.0  # ejected until 15
    tracker.record_success(a)
    for _ in range(2):
        tracker.record_failure(a, 30.0, backends)
    assert tracker.record_failure(a, 30.0, backends) == 5.0, "15 s in without ejection: back to the base"


def test_never_more_than_the_maximum_share_is_ejected() -> None:
    tracker = HealthTracker(HEALTH, EJECTION)
    backends = [backend(name) for name in "abcd"]
    for target in backends:
        for _ in range(3):
            tracker.record_failure(target, 0.0, backends)
    assert [target.health.ejected(0.0) for target in backends] == [True, True, False, False]
    assert tracker.max_ejected(3) == 1 and tracker.max_ejected(1) == 1
    assert HealthTracker(HEALTH, EjectionConfig(3, 5.0, 30.0, max_ejected_percent=0)).max_ejected(10) == 0


def test_a_backend_that_was_down_is_readmitted_when_its_checks_pass_again() -> None:
    tracker = HealthTracker(HEALTH, EJECTION)
    backends = [backend("down"), backend("erring"), backend("c"), backend("d")]
    down, erring = backends[:2]
    for target in (down, erring):
        for _ in range(3):
            tracker.record_failure(target, 0.0, backends)
        assert target.health.ejected(0.1)
    for now in (0.5, 1.5):  # the dead one also fails its checks; the one answering 500s passes them
        tracker.record_check(down, False, now, "refused")
        tracker.record_check(erring, True, now)
    for now in (2.5, 3.5):
        tracker.record_check(down, True, now)
        tracker.record_check(erring, True, now)
    assert down.health.available(3.5), "it was down and is back: readmitted at once"
    assert not erring.health.available(3.5), "its checks never failed: it serves out its ejection"


# Tiers and panic


def test_candidates_come_from_the_first_tier_with_an_available_backend() -> None:
    primary, secondary_a, secondary_b = backend("p"), backend("s1", tier=1), backend("s2", tier=1)
    tiers = [[primary], [secondary_a, secondary_b]]
    assert candidates(tiers, 0.0) == ([primary], False)
    primary.health.healthy = False
    assert candidates(tiers, 0.0) == ([secondary_a, secondary_b], False)
    primary.health.healthy = True
    assert candidates(tiers, 0.0, tried=[primary]) == ([secondary_a, secondary_b], False), "retry: next tier"


def test_panic_tries_backends_that_look_down_but_never_drained_ones() -> None:
    a, b, c = backend("a"), backend("b", tier=1), backend("c", tier=1)
    a.health.healthy = False
    b.health.ejected_until = 100.0
    c.health.drained = True
    tiers = [[a], [b, c]]
    assert candidates(tiers, 0.0) == ([a, b], True)
    assert candidates(tiers, 0.0, tried=[a]) == ([b], True)
    assert candidates(tiers, 0.0, tried=[a, b]) == ([], False)
    c.health.drained = False
    assert candidates(tiers, 0.0, tried=[a, b]) == ([c], False)


def test_backend_set_groups_tiers_and_picks_with_its_policy() -> None:
    backends = [backend("b1", tier=1), backend("a"), backend("b2", tier=1), backend("a2")]
    chosen = BackendSet(backends, make_policy("round_robin"))
    assert [[member.name for member in tier] for tier in chosen.tiers] == [["a", "a2"], ["b1", "b2"]]
    assert {chosen.pick(0.0)[0].name for _ in range(4)} == {"a", "a2"}  # type: ignore[union-attr]
    assert [member.name for member in chosen.matching("b1")] == ["b1"]
    assert chosen.pick(0.0, tried=backends) == (None, False)


# Retry budget


def test_the_budget_allows_a_floor_plus_a_share_of_recent_requests() -> None:
    budget = RetryBudget(percent=20.0, min_per_second=1.0, window_seconds=10)
    for _ in range(100):
        budget.record_request(1000.0)
    spent = sum(budget.try_spend(1000.5) for _ in range(100))
    assert spent == 10 + 20  # 1/s over 10 s, plus 20% of 100
    assert budget.snapshot(1000.5) == {"window_seconds": 10, "requests": 100, "retries": 30, "allowed": 30.0}
    assert not budget.try_spend(1009.0), "still inside the window"
    assert budget.try_spend(1011.0), "the window slid past the burst"
    assert budget.snapshot(1011.0)["requests"] == 0


def test_a_zero_budget_allows_no_retry() -> None:
    budget = RetryBudget(percent=0.0, min_per_second=0.0)
    budget.record_request(5.0)
    assert not budget.try_spend(5.0)


# The proxy's retry rules, on fake pools


class FakePool:
    """Answers each try from a script: an `UpstreamResponse`, an `UpstreamError`, or a delay then one."""

    def __init__(self, *outcomes: UpstreamResponse | UpstreamError | tuple[float, UpstreamResponse]) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    async def request(self, method: bytes, target: bytes, headers: bytes, body: bytes, timeout: float) -> Any:
        self.calls += 1
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if isinstance(outcome, tuple):
            await asyncio.sleep(outcome[0])
            outcome = outcome[1]
        if isinstance(outcome, UpstreamError):
            raise outcome
        return outcome


def ok(name: str, status: int = 200) -> UpstreamResponse:
    return UpstreamResponse(
        status, [(b"content-type", b"application/json"), (b"connection", b"keep-alive")], name.encode()
    )


def make_proxy(
    pools: dict[str, FakePool], *, max_retries: int = 2, budget: RetryBudget | None = None, hedge: float | None = None
) -> tuple[Proxy, dict[str, Backend]]:
    backends = {name: backend(name) for name in pools}
    metrics = RouterMetrics(lambda: list(backends.values()), lambda: 0.0)
    retry = RetryConfig(max_retries, 1.0, 20.0, 10.0, frozenset({500, 502, 503, 504}), hedge)
    table = RoutingTable(
        backends=BackendSet(list(backends.values()), make_policy("round_robin")),
        upstreams={backends[name]: Upstream(pool, metrics.series(name)) for name, pool in pools.items()},  # type: ignore[arg-type]
        tracker=HealthTracker(HEALTH, EJECTION),
        retry=retry,
        budget=budget or RetryBudget(20.0, 10.0),
    )
    return Proxy(table, metrics, _clock()), backends


def _clock() -> Callable[[], float]:
    ticks = iter(range(10**6))
    return lambda: 1000.0 + next(ticks) * 0.001


def forward(proxy: Proxy, method: bytes = b"POST") -> Any:
    request = Request(method, b"/invocations", [(b"content-type", b"application/json")], b"{}", "10.1.2.3", True)
    return asyncio.run(proxy.forward(request))


def test_a_server_error_is_retried_on_another_backend_and_counted() -> None:
    pools = {"a": FakePool(ok("a", 500)), "b": FakePool(ok("b")), "c": FakePool(ok("c"))}
    proxy, backends = make_proxy(pools)
    response = forward(proxy)
    assert response.status == 200 and response.body in (b"b", b"c")
    assert b"x-routed-to: " + response.body + b"\r\n" in response.headers
    assert b"connection" not in response.headers
    assert backends["a"].health.failures == 1 and backends["a"].last_error == "answered 500"


def test_a_client_error_is_not_retried() -> None:
    pools = {"a": FakePool(ok("a", 404)), "b": FakePool(ok("b"))}
    proxy, _ = make_proxy(pools)
    assert forward(proxy).status == 404
    assert pools["b"].calls == 0


def test_tries_never_repeat_a_backend_and_stop_at_max_retries() -> None:
    pools = {name: FakePool(UpstreamTimeout("slow")) for name in "abcd"}
    proxy, _ = make_proxy(pools, max_retries=2)
    response = forward(proxy)
    assert response.status == 503
    assert sorted(pool.calls for pool in pools.values()) == [0, 1, 1, 1]


def test_no_budget_is_spent_when_no_backend_is_left_to_retry_on() -> None:
    budget = RetryBudget(20.0, 10.0)
    proxy, _ = make_proxy({"only": FakePool(UpstreamTimeout("slow"))}, budget=budget)
    assert forward(proxy).status == 503
    assert budget.snapshot(1000.0)["retries"] == 0


def test_when_every_backend_errs_the_last_answer_is_returned() -> None:
    pools = {"a": FakePool(ok("a", 502)), "b": FakePool(ConnectFailed("refused"))}
    proxy, _ = make_proxy(pools)
    response = forward(proxy)
    assert (response.status, response.body) == (502, b"a")


def test_a_spent_budget_stops_retries_but_failed_connects_need_none() -> None:
    empty = RetryBudget(0.0, 0.0)
    proxy, _ = make_proxy({"a": FakePool(ConnectFailed("refused")), "b": FakePool(ok("b"))}, budget=empty)
    assert forward(proxy).status == 200, "a failed connect sent nothing: retrying it costs no budget"
    pools = {"a": FakePool(UpstreamTimeout("slow")), "b": FakePool(ok("b"))}
    proxy, _ = make_proxy(pools, budget=RetryBudget(0.0, 0.0))
    response = forward(proxy)
    assert response.status == 503 and b"retry budget" in response.body
    assert pools["b"].calls == 0


def test_with_every_backend_drained_the_503_says_how_to_undrain() -> None:
    pools = {"a": FakePool(ok("a")), "b": FakePool(ok("b"))}
    proxy, backends = make_proxy(pools)
    for drained in backends.values():
        drained.health.drained = True
    response = forward(proxy)
    assert response.status == 503 and b"every backend is drained" in response.body and b"undrain" in response.body
    assert b"retry-after: 1" in response.headers
    assert pools["a"].calls == pools["b"].calls == 0


def test_hedging_answers_from_the_twin_when_the_first_try_is_slow() -> None:
    pools = {"a": FakePool((1.0, ok("a"))), "b": FakePool(ok("b"))}
    proxy, backends = make_proxy(pools, hedge=0.01)
    response = forward(proxy)
    assert (response.status, response.body) == (200, b"b")
    assert backends["a"].in_flight == 0, "the slow try was cancelled"


def test_hedging_still_retries_failures() -> None:
    pools = {"a": FakePool(ok("a", 503)), "b": FakePool(ok("b"))}
    proxy, _ = make_proxy(pools, hedge=0.5)
    assert forward(proxy).body == b"b"


def test_forwarded_headers_drop_hop_by_hop_ones_and_extend_x_forwarded_for() -> None:
    request = Request(
        b"POST",
        b"/",
        [
            (b"connection", b"keep-alive, x-secret"),
            (b"x-secret", b"1"),
            (b"te", b"trailers"),
            (b"host", b"router"),
            (b"x-request-id", b"7"),
            (b"x-forwarded-for", b"10.0.0.1"),
        ],
        b"",
        "127.0.0.1",
        True,
    )
    assert request_headers(request) == b"x-request-id: 7\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\n"
