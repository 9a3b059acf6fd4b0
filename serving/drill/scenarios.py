"""The drill scenarios, by name: each a schedule of fault actions on the first clouds of the stack.

An action's time is a fraction of the scenario's duration, so a short test drill and a long rehearsal
run the same schedule. The fault window runs from the first action to the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from toolkit.errors import ConfigError

__all__ = ["SCENARIOS", "FaultAction", "FaultTarget", "Scenario", "get_scenarios"]

Verb = Literal["kill", "restart", "pause", "resume", "errors", "slow", "clear"]
# Well above the router's per-try timeout in a drill, so that a slow cloud's tries time out and move on.
SLOW_DELAY_SECONDS = 2.0
# Faults start once the load is steady and end early enough for the recovery to be seen.
FAULT_START = 0.2
FAULT_END = 0.6


class FaultTarget(Protocol):
    """What a scenario acts on: one cloud's model server at a time."""

    def kill(self, cloud: str) -> None: ...
    def restart(self, cloud: str) -> None: ...
    def pause(self, cloud: str) -> None: ...
    def resume(self, cloud: str) -> None: ...
    def inject(self, cloud: str, errors: bool, delay_seconds: float) -> None: ...


@dataclass(frozen=True)
class FaultAction:
    """`verb` on each faulted cloud at `at` (a fraction of the duration)."""

    at: float
    verb: Verb

    def apply(self, target: FaultTarget, clouds: Sequence[str]) -> None:
        for cloud in clouds:
            if self.verb == "kill":
                target.kill(cloud)
            elif self.verb == "restart":
                target.restart(cloud)
            elif self.verb == "pause":
                target.pause(cloud)
            elif self.verb == "resume":
                target.resume(cloud)
            else:
                target.inject(cloud, self.verb == "errors", SLOW_DELAY_SECONDS if self.verb == "slow" else 0.0)


@dataclass(frozen=True)
class Scenario:
    """A named schedule of fault actions on the first `faulted` clouds."""

    name: str
    description: str
    faulted: int
    actions: tuple[FaultAction, ...]

    @property
    def window(self) -> tuple[float, float]:
        """The fault window as fractions of the duration."""
        return self.actions[0].at, self.actions[-1].at

    def faulted_clouds(self, clouds: Sequence[str]) -> list[str]:
        return list(clouds[: self.faulted])


def _window(name: str, description: str, faulted: int, start: Verb, end: Verb) -> Scenario:
    return Scenario(name, description, faulted, (FaultAction(FAULT_START, start), FaultAction(FAULT_END, end)))


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
    )
}


def get_scenarios(names: Sequence[str]) -> list[Scenario]:
    """The scenarios called `names` (`all` for every one), in the order given; `ConfigError` for an unknown one."""
    if not names or "all" in names:
        return list(SCENARIOS.values())
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise ConfigError(f"unknown scenario {', '.join(unknown)}; choose from all, {', '.join(SCENARIOS)}")
    return [SCENARIOS[name] for name in names]
