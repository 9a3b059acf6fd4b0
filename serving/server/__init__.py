"""The model server (`mct serve`): one cloud's champion, verified and hot-reloaded, over two protocols.

loader.py           pointer -> manifest -> every file's SHA-256 -> an immutable LoadedModel
model.py            LoadedModel: one verified version and its predictions
reloader.py         the polling task and the atomic swap
inputs.py           body limits, JSON, and the protocol-neutral feature validation
mlflow_protocol.py  POST /invocations as `mlflow models serve` speaks it
v2_protocol.py      the Open Inference Protocol v2 (KServe, Triton, Seldon)
auth.py             the optional bearer token
drill.py            fault injection, in drill mode only
metrics.py          Prometheus series and the timing middleware
app.py              create_app: the FastAPI routes
run.py              run_server: the store, the reloader and the app on uvicorn
"""
