"""A stand-in model server for the router's tests: `python tests/router_backends.py --port P --name aws`.

It answers like a model server (`GET /v2/health/ready`, `POST /invocations`, `POST /v2/models/m/infer`)
with a JSON body naming itself, and takes orders on a control endpoint that exists only here:

- `POST /control` with `{"status": 500, "delay_seconds": 0.2, "ready": false}` (each key optional) sets
  the status and delay of every prediction and whether readiness passes; `{}` restores the defaults.
- `GET /control` returns the settings and how many predictions it has answered.
- A prediction with `X-Test-Status: 404` is answered with that status, whatever the mode.

The prediction body echoes the request headers received, so tests can see what the router forwards.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

DEFAULTS: dict[str, float | bool] = {"status": 200, "delay_seconds": 0.0, "ready": True}


class Backend:
    """The stand-in's state: the mode set through /control, and a count of predictions answered."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = dict(DEFAULTS)
        self.predictions = 0

    async def ready(self, request: web.Request) -> web.Response:
        status = 200 if self.mode["ready"] else 503
        return web.json_response({"ready": bool(self.mode["ready"]), "backend": self.name}, status=status)

    async def predict(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.predictions += 1
        if self.mode["delay_seconds"]:
            await asyncio.sleep(float(self.mode["delay_seconds"]))
        status = int(request.headers.get("X-Test-Status", self.mode["status"]))
        document = {
            "backend": self.name,
            "path": request.path_qs,
            "body_bytes": len(body),
            "headers": {key.lower(): value for key, value in request.headers.items()},
        }
        return web.json_response(document, status=status, headers={"X-Backend-Name": self.name})

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.mode = {**DEFAULTS, **(await request.json())}
        return web.json_response({**self.mode, "predictions": self.predictions, "backend": self.name})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_post("/invocations", self.predict)
        app.router.add_post("/v2/models/{model}/infer", self.predict)
        app.router.add_route("*", "/control", self.control)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    web.run_app(Backend(args.name).app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
