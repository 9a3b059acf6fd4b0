"""The model server's FastAPI application: MLflow's scoring protocol and Open Inference Protocol v2.

Routes (prediction routes take the bearer token when one is configured; health routes never do):

    GET  /ping, /health                   MLflow health: 200 once a verified model is loaded, else 503
    GET  /version                         toolkit version, model and version served, cloud
    POST /invocations                     MLflow scoring (mlflow_protocol)            token
    GET  /v2                              v2 server metadata
    GET  /v2/health/live                  200 while the process runs
    GET  /v2/health/ready                 200 once a verified model is loaded, else 503
    GET  /v2/models/{name}                v2 model metadata                           token
    GET  /v2/models/{name}/ready          200 once loaded, else 503
    POST /v2/models/{name}/infer          v2 inference (v2_protocol)                  token
    GET  /metrics                         Prometheus
    POST /drill/fault                     only with drill mode: inject errors, delay  token

Handlers are `async` and run the model on the event loop: onnxruntime answers a small batch in
microseconds, far less than a hop to a worker thread would cost. Responses are serialised with orjson.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from serving.server import mlflow_protocol, v2_protocol
from serving.server.auth import bearer_token_matches
from serving.server.drill import DrillFault, FaultInjection
from serving.server.inputs import RequestError, read_json
from serving.server.metrics import CONTENT_TYPE_LATEST, MetricsMiddleware
from serving.server.model import LoadedModel
from serving.server.reloader import ModelReloader
from toolkit import __version__

__all__ = ["ServerOptions", "create_app"]

logger = logging.getLogger(__name__)

JSON = "application/json"
Endpoint = Callable[[Request], Awaitable[Response]]
V2_PREFIX = "/v2"


@dataclass(frozen=True)
class ServerOptions:
    """How one server behaves, beyond the model it serves."""

    cloud: str
    token: str | None = None
    drill_mode: bool = False
    max_body_bytes: int = 10 * 1024 * 1024


def create_app(reloader: ModelReloader, options: ServerOptions) -> FastAPI:
    """The application; its lifespan runs the reloader's polling task."""
    metrics = reloader.metrics
    faults = FaultInjection() if options.drill_mode else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        polling = asyncio.create_task(reloader.run(), name="pointer-poll")
        try:
            yield
        finally:
            polling.cancel()
            with suppress(asyncio.CancelledError):
                await polling

    app = FastAPI(
        title=f"mct model server ({options.cloud})",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    templates: dict[object, str] = {}  # endpoint -> its path template, the metrics' route label
    app.add_middleware(MetricsMiddleware, metrics=metrics, served_by=options.cloud, route_templates=templates)

    def route(path: str, method: str = "GET") -> Callable[[Endpoint], Endpoint]:
        """Register a plain Starlette endpoint: FastAPI's dependency solving would cost more per request
        than parsing a single-row prediction, and these endpoints take nothing but the request."""

        def register(endpoint: Endpoint) -> Endpoint:
            app.router.add_route(path, endpoint, methods=[method])
            templates[endpoint] = path
            return endpoint

        return register

    def readiness_route(path: str, ready_body: dict[str, Any], not_ready_body: dict[str, Any]) -> Endpoint:
        """A route that answers 200 with `ready_body` once a model is served, else 503 and the reason."""

        @route(path)
        async def readiness(request: Request) -> Response:
            model = reloader.current
            if model is None:
                return json_response({**not_ready_body, "reason": reloader.not_ready_reason}, status=503)
            return json_response({**ready_body, "model": model.name, "version": model.version}, model)

        return readiness

    def check_token(request: Request) -> None:
        if options.token is not None and not bearer_token_matches(request.headers.get("authorization"), options.token):
            raise RequestError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")

    async def serving_model(request: Request) -> LoadedModel:
        """The model for a prediction request, after the token check and the drill's faults."""
        check_token(request)
        if faults is not None:
            await faults.apply()
        model = reloader.current
        if model is None:
            raise RequestError(503, f"no model loaded yet: {reloader.not_ready_reason}")
        return model

    def named_model(model: LoadedModel, name: str) -> LoadedModel:
        if name != model.name:
            raise RequestError(404, f"unknown model {name!r}: this server serves {model.name!r}")
        return model

    # MLflow scoring protocol.

    for path in ("/ping", "/health"):
        readiness_route(path, {"status": "ready"}, {"status": "not ready"})

    @route("/version")
    async def version(request: Request) -> Response:
        model = reloader.current
        return json_response(
            {
                "server": f"mct {__version__}",
                "cloud": options.cloud,
                "model": reloader.model,
                "model_version": model.version if model is not None else None,
            }
        )

    @route("/invocations", method="POST")
    async def invocations(request: Request) -> Response:
        model = await serving_model(request)
        document = await read_json(request, options.max_body_bytes)
        batch = mlflow_protocol.parse_request(document, model.schema)
        prediction = model.predict(batch)
        metrics.predicted_rows.labels(protocol="mlflow").inc(batch.rows)
        return json_response(mlflow_protocol.response_body(model, prediction), model)

    # Open Inference Protocol v2.

    @route(V2_PREFIX)
    async def v2_server(request: Request) -> Response:
        return json_response({"name": "mct", "version": __version__, "extensions": []})

    @route(V2_PREFIX + "/health/live")
    async def live(request: Request) -> Response:
        return json_response({"live": True})

    v2_ready = readiness_route(V2_PREFIX + "/health/ready", {"ready": True}, {"ready": False})

    @route(V2_PREFIX + "/models/{name}")
    async def v2_metadata(request: Request) -> Response:
        model = named_model(await serving_model(request), request.path_params["name"])
        return json_response(v2_protocol.model_metadata(model), model)

    @route(V2_PREFIX + "/models/{name}/ready")
    async def v2_model_ready(request: Request) -> Response:
        name = request.path_params["name"]
        if name != reloader.model:
            raise RequestError(404, f"unknown model {name!r}: this server serves {reloader.model!r}")
        return await v2_ready(request)

    @route(V2_PREFIX + "/models/{name}/infer", method="POST")
    async def v2_infer(request: Request) -> Response:
        model = named_model(await serving_model(request), request.path_params["name"])
        document = await read_json(request, options.max_body_bytes)
        batch, outputs = v2_protocol.parse_request(document, model.schema)
        prediction = model.predict(batch)
        metrics.predicted_rows.labels(protocol="v2").inc(batch.rows)
        request_id = document.get("id") if isinstance(document, dict) else None
        return json_response(v2_protocol.response_body(model, prediction, outputs, request_id), model)

    @route("/metrics")
    async def prometheus(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    if faults is not None:

        @route("/drill/fault", method="POST")
        async def drill_fault(request: Request) -> Response:
            check_token(request)
            document = await read_json(request, options.max_body_bytes)
            settings = faults.update(document)
            logger.warning("drill faults now: errors=%s delay_seconds=%s", settings.errors, settings.delay_seconds)
            return json_response(settings.model_dump())

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(request, exc.status, exc.message, headers)

    @app.exception_handler(DrillFault)
    async def drilled(request: Request, exc: DrillFault) -> Response:
        return error_response(request, 500, str(exc))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, f"internal error ({type(exc).__name__}); the server log has details")

    return app


def json_response(content: Any, model: LoadedModel | None = None, status: int = 200) -> Response:
    """A JSON response by orjson (NumPy arrays included), with `X-Model-Version` when a model answered."""
    headers = {"X-Model-Version": model.version} if model is not None else None
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status, headers, media_type=JSON)


def error_response(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error in the shape of the protocol the request used."""
    protocol = v2_protocol if request.url.path.startswith(V2_PREFIX) else mlflow_protocol
    body = orjson.dumps(protocol.error_body(status, message))
    return Response(body, status, headers, media_type=JSON)
