# syntax=docker/dockerfile:1
# The serving image: `mct serve` (FastAPI + onnxruntime) for one cloud's champion, the same image on every
# cloud. `make image` builds it for linux/amd64, what Fargate, Cloud Run and Container Apps run. The platform
# appends `--cloud CLOUD` to the entrypoint and sets PORT and MCT_CLOUDS__<CLOUD>__URL (the model bucket).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, in their own layer: a code change rebuilds only the layer below.
COPY infra/image/requirements.txt /tmp/requirements.txt
RUN pip install --requirement /tmp/requirements.txt
WORKDIR /src
COPY pyproject.toml README.md ./
COPY toolkit ./toolkit
COPY serving ./serving
RUN pip install --no-deps .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 mct \
    && useradd --system --uid 10001 --gid mct --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mct
COPY --from=build /opt/venv /opt/venv
# The server writes nothing: it runs on a read-only root file system (ECS sets one).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCT_HOME=/tmp/mct \
    ORT_DISABLE_TELEMETRY=1 \
    PORT=8080
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/live' % os.environ['PORT'], timeout=4)"
# A shell only to read $PORT (Cloud Run sets it); `exec` leaves the server as PID 1, so it gets SIGTERM.
ENTRYPOINT ["/bin/sh", "-c", "exec mct serve --host 0.0.0.0 --port \"$PORT\" \"$@\"", "mct-serve"]
