"""The emulators' one error: a local emulator that cannot be found, started or used."""

from __future__ import annotations

from toolkit.errors import ToolkitError

__all__ = ["EmulatorError"]


class EmulatorError(ToolkitError):
    """An emulator is missing, did not start, or refused to create a bucket; the message says what to do."""

    exit_code = 1
