"""A client of the router's admin API, the same for both engines: status, drain and undrain."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from toolkit.errors import ConfigError, ToolkitError

__all__ = ["AdminClient", "RouterUnreachable"]

TIMEOUT_SECONDS = 5.0


class RouterUnreachable(ToolkitError):
    """No router answered at the URL."""

    exit_code = 1


class AdminClient:
    """Talks to the admin API of the router at `url` with the bearer `token`."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def status(self) -> dict[str, Any]:
        """The `/router/status` document."""
        return self._call("GET", "/router/status")

    def set_drained(self, name: str, drained: bool) -> list[str]:
        """Drain (or undrain) the backends of `name`, a backend or a cloud; the backends that moved."""
        action = "drain" if drained else "undrain"
        document = self._call("POST", f"/router/backends/{quote(name, safe='')}/{action}")
        return list(document["drained" if drained else "undrained"])

    def _call(self, method: str, path: str) -> dict[str, Any]:
        if not self.token:
            raise ConfigError("the admin API needs a token: pass --token or set MCT_ROUTER__ADMIN_TOKEN")
        request = urllib.request.Request(
            self.url + path,
            method=method,
            headers={"Authorization": f"Bearer {self.token}"},
            data=b"" if method == "POST" else None,
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a router is reached directly
        try:
            with opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            raise ConfigError(f"the router at {self.url} answered {error.code}: {_reason(error)}") from None
        except (OSError, ValueError) as exc:
            raise RouterUnreachable(f"no router answers at {self.url} ({exc}); start one with `mct route`") from None


def _reason(error: urllib.error.HTTPError) -> str:
    try:
        document = json.loads(error.read())
    except ValueError:
        return error.reason or "no reason given"
    known = f" (known: {document['known']})" if "known" in document else ""
    return str(document.get("error", document)) + known
