"""Drill mode: faults an operator switches on to rehearse failover (`mct serve --drill-mode` only).

`POST /drill/fault` with `{"errors": true|false, "delay_seconds": float}` sets the faults that every
prediction request then suffers: an added delay, then a 500 answer if `errors` is on. The body states the
whole fault state, so `{}` clears every fault. Without `--drill-mode` the route does not exist.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.server.inputs import RequestError

__all__ = ["DrillFault", "FaultInjection", "FaultSettings"]

# A longer injected delay would outlast any client or health-check timeout worth rehearsing.
MAX_DELAY_SECONDS = 120.0


class DrillFault(Exception):
    """The failure a drill injects into a prediction request."""


class FaultSettings(BaseModel):
    """The faults to inject; the defaults are none."""

    model_config = ConfigDict(extra="forbid", strict=True)

    errors: bool = False
    delay_seconds: float = Field(0.0, ge=0.0, le=MAX_DELAY_SECONDS)


class FaultInjection:
    """The faults in force; replaced whole by each `POST /drill/fault`."""

    def __init__(self) -> None:
        self.settings = FaultSettings()

    def update(self, document: Any) -> FaultSettings:
        """Replace the faults with those `document` states; `RequestError` if it is not a valid fault body."""
        if not isinstance(document, dict):
            raise RequestError(400, 'the drill body must be a JSON object like {"errors": true, "delay_seconds": 0.5}')
        try:
            self.settings = FaultSettings.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise RequestError(400, f"invalid drill setting {where}: {first['msg']}") from None
        return self.settings

    async def apply(self) -> None:
        """Suffer the faults in force: sleep the delay, then fail if errors are on."""
        settings = self.settings
        if settings.delay_seconds:
            await asyncio.sleep(settings.delay_seconds)
        if settings.errors:
            raise DrillFault("drill mode: injected error (POST /drill/fault with errors=false clears it)")
