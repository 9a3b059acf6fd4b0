"""The drill scenarios, by name: each a schedule of fault actions on the servers, the router or the storage.

An action's time is a fraction of the scenario's duration, so a short test drill and a long rehearsal
run the same schedule. The fault window runs from the start of the first action to the end of the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from toolkit.errors import ConfigError

__all__ = ["SCENARIOS", "FaultAction", "FaultTarget", "Scenario", "get_scenarios"]

Verb = Literal[
    "kill",
    "restart",
    "pause",
    "resume",
    "errors",
    "slow",
    "clear",
    "hand-over-router",
    "kill-router",
    "storage-down",
    "promote",
    "storage-up",
    "republish",
]
Target = Literal["servers", "router", "storage"]
# Well above the router's per-try timeout in a drill, so that a slow cloud's tries time out and move on.
SLOW_DELAY_SECONDS = 2.0
# Faults start once the load is steady and end early enough for the recovery to be seen.
FAULT_START = 0.2
FAULT_END = 0.6
# What an action found out, for the report (e.g. which clouds a publish reached); None when nothing.
Evidence = dict[str, Any] | None


class FaultTarget(Protocol):
    """What scenarios act on: one cloud's model server or storage at a time, the router, the registry."""

    def kill(self, cloud: str) -> None: ...
    def restart(self, cloud: str) -> None: ...
    def pause(self, cloud: str) -> None: ...
    def resume(self, cloud: str) -> None: ...
    def inject(self, cloud: str, errors: bool, delay_seconds: float) -> None: ...
    def hand_over_router(self) -> Evidence: ...
    def kill_router(self) -> Evidence: ...
    def storage_down(self, cloud: str) -> Evidence: ...
    def storage_up(self, cloud: str) -> Evidence: ...
    def promote(self) -> Evidence: ...
    def republish(self) -> Evidence: ...


@dataclass(frozen=True)
class FaultAction:
    """`verb` at `at` (a fraction of the duration), on each faulted cloud or once for the whole stack."""

    at: float
    verb: Verb

    def apply(self, target: FaultTarget, clouds: Sequence[str]) -> Evidence:
        """Act; what the action found out, if anything."""
        whole_stack = {
            "hand-over-router": target.hand_over_router,
            "kill-router": target.kill_router,
            "promote": target.promote,
            "republish": target.republish,
        }
        if self.verb in whole_stack:
            return whole_stack[self.verb]()
        evidence: dict[str, Any] = {}
        for cloud in clouds:
            if self.verb == "kill":
                target.kill(cloud)
            elif self.verb == "restart":
                target.restart(cloud)
            elif self.verb == "pause":
                target.pause(cloud)
            elif self.verb == "resume":
                target.resume(cloud)
            elif self.verb == "storage-down":
                evidence[cloud] = target.storage_down(cloud)
            elif self.verb == "storage-up":
                evidence[cloud] = target.storage_up(cloud)
            else:
                target.inject(cloud, self.verb == "errors", SLOW_DELAY_SECONDS if self.verb == "slow" else 0.0)
        return evidence or None


@dataclass(frozen=True)
class Scenario:
    """A named schedule of fault actions on `faulted` clouds' servers or storage, or on the router.

    `router_down`: the router itself is down during the fault window (a hard kill), so failures there
    are expected and reported apart from the SLO.
    """

    name: str
    description: str
    target: Target
    faulted: int
    actions: tuple[FaultAction, ...]
    router_down: bool = False

    def faulted_clouds(self, clouds: Sequence[str]) -> list[str]:
        """The clouds this scenario faults among the candidates: the first ones, the last ones for storage."""
        if self.target == "router" or not self.faulted:
            return []
        return list(clouds[-self.faulted :] if self.target == "storage" else clouds[: self.faulted])

    @property
    def promotes(self) -> bool:
        """Whether a new version is promoted during the scenario."""
        return any(action.verb == "promote" for action in self.actions)


def _window(name: str, description: str, faulted: int, start: Verb, end: Verb) -> Scenario:
    actions = (FaultAction(FAULT_START, start), FaultAction(FAULT_END, end))
    return Scenario(name, description, "servers", faulted, actions)


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        _window("kill-one", "SIGKILL one cloud's server, restart it later", 1, "kill", "restart"),
        _window("errors-one", "one server answers 500s (drill switch)", 1, "errors", "clear"),
        _window(
            "slow-one", f"one server adds {SLOW_DELAY_SECONDS:.0f} s to every answer (drill switch)", 1, "slow", "clear"
        ),
        _window("hang-one", "SIGSTOP one server (requests hang), SIGCONT later", 1, "pause", "resume"),
        _window("kill-two", "SIGKILL two clouds' servers, the third carries everything", 2, "kill", "restart"),
        Scenario(
            "storage-outage",
            "one cloud's storage is down while a new version is promoted and published; it comes back and a "
            "re-publish converges",
            "storage",
            1,
            (
                FaultAction(FAULT_START, "storage-down"),
                FaultAction(0.3, "promote"),
                FaultAction(0.5, "storage-up"),
                FaultAction(FAULT_END, "republish"),
            ),
        ),
        Scenario(
            "router-restart",
            "graceful router upgrade: a new router takes over the port (SO_REUSEPORT) and the old one drains "
            "(HAProxy: a master-worker reload)",
            "router",
            0,
            (FaultAction(0.4, "hand-over-router"),),
        ),
        Scenario(
            "router-kill",
            "hard restart: SIGKILL the router, start a new one; clients see errors until it listens",
            "router",
            0,
            (FaultAction(0.4, "kill-router"),),
            router_down=True,
        ),
    )
}


# A graceful router restart is always compared with a hard one, reported separately.
COMPANIONS = {"router-restart": "router-kill"}


def get_scenarios(names: Sequence[str]) -> list[Scenario]:
    """The scenarios called `names` (`all` for every one), in the order given; `ConfigError` for an unknown one.

    `router-restart` brings `router-kill` along, right after it.
    """
    if not names or "all" in names:
        return list(SCENARIOS.values())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise ConfigError(f"unknown scenario {', '.join(unknown)}; choose from all, {', '.join(SCENARIOS)}")
    chosen: list[str] = []
    for name in names:
        for item in (name, COMPANIONS.get(name)):
            if item is not None and item not in chosen:
                chosen.append(item)
    return [SCENARIOS[name] for name in chosen]
