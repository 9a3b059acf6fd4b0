"""A `RouterConfig` as haproxy.cfg: the same backends, checks, ejection, retries and timeouts on HAProxy.

What maps directly: backends (servers named like the built-in router's backends), active health checks
(`option httpchk`, `inter`, `rise`, `fall`, `timeout check`), passive ejection (`observe layer7` with
`error-limit` and `on-error mark-down`; health checks bring a server back), retries on another server
(`retries`, `retry-on`, `option redispatch 1`), per-try timeouts (`timeout connect`/`server`), the
request body limit (413), `X-Routed-To`, and drain (runtime API). What maps approximately: `peak_ewma`
and `least_outstanding` become `leastconn` (HAProxy has no latency-aware balancing); tiers above 0 become
`backup` servers (HAProxy has one backup tier); ejection back-off is HAProxy's `rise` checks. What does
not map and is refused: hedging, several base paths, retry statuses HAProxy cannot retry on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.router.config import BackendSpec, RouterConfig
from serving.router.constants import CLIENT_IDLE_SECONDS
from toolkit.errors import ConfigError

__all__ = ["BACKEND", "HaproxyPaths", "check_supported", "render_config", "write_files"]

BACKEND = "clouds"  # the HAProxy backend that holds every model server
ADMIN_BACKEND = "mct_admin"
POLICIES = {
    "round_robin": "roundrobin",
    "weighted": "roundrobin",
    "least_outstanding": "leastconn",
    "peak_ewma": "leastconn",
}
# The statuses `retry-on` accepts among the 5xx the router may be told to retry.
RETRYABLE_STATUSES = frozenset({500, 501, 502, 503, 504})
# HAProxy's weights are integers up to 256; the largest configured weight maps to 256.
MAX_WEIGHT = 256
# What HAProxy answers itself when no try succeeded, by status.
ERRORS = {
    502: "every try failed: the backends answered with errors or not at all",
    503: "no backend answered: every try failed to connect, or every backend is down or drained",
    504: "every try timed out",
}


@dataclass(frozen=True)
class HaproxyPaths:
    """Where a running HAProxy keeps its sockets and files; `admin_port` is the admin API of `mct route`."""

    directory: Path
    admin_port: int | None = None

    @property
    def runtime_socket(self) -> Path:
        return self.directory / "runtime.sock"

    @property
    def state_file(self) -> Path:
        return self.directory / "server-state"

    @property
    def config_file(self) -> Path:
        return self.directory / "haproxy.cfg"


def render_config(
    config: RouterConfig, paths: HaproxyPaths, metrics_port: int | None = None, version: tuple[int, int] = (0, 0)
) -> str:
    """haproxy.cfg for `config` and HAProxy `version`; `ConfigError` for what HAProxy cannot do the same way."""
    check_supported(config)
    retry = config.retry
    health = config.health
    per_try = _ms(retry.per_try_timeout_seconds)
    statuses = " ".join(str(status) for status in sorted(retry.statuses))
    lines = [
        "# Rendered by mct from the router configuration (mct route --engine haproxy --print-config).",
        "global",
        "    master-worker",
        f"    stats socket {paths.runtime_socket} mode 600 level admin expose-fd listeners",
        f"    server-state-file {paths.state_file}",
        # On a reload, an idle keep-alive connection closes after its next answer rather than at once (a
        # request sent on it at that instant would be lost); HAProxy 2.7 and later.
        *(["    idle-close-on-response"] if version >= (2, 7) else []),
        "    log stderr format raw local0 warning",
        # HAProxy's default 16 KiB buffers: a request is retried only if it fits one (a batch of about fifty
        # rows of thirty features); larger ones are proxied, not retried. Buffers above glibc's mmap threshold
        # (128 KiB) cost an mmap and page faults per request: 256 KiB ran at a tenth of nginx's throughput.
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option dontlognull",
        "    load-server-state-from-file global",
        f"    timeout connect {per_try}",
        f"    timeout server {per_try}",
        f"    timeout queue {per_try}",
        f"    timeout check {_ms(health.timeout_seconds)}",
        f"    timeout client {_ms(CLIENT_IDLE_SECONDS)}",
        f"    timeout http-request {_ms(CLIENT_IDLE_SECONDS)}",
        f"    timeout http-keep-alive {_ms(CLIENT_IDLE_SECONDS)}",
        *(_error_page(status) for status in ERRORS),
        "",
        "frontend router",
        f"    bind {_address(config.host, config.port)}",
        f"    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt {config.max_body_bytes} }}",
        *_admin_rules(config, paths),
        f"    default_backend {BACKEND}",
    ]
    if metrics_port is not None:
        lines += [
            "",
            "frontend metrics",
            f"    bind {_address(config.host, metrics_port)}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
        ]
    lines += [
        "",
        f"backend {BACKEND}",
        f"    balance {POLICIES[config.policy]}",
        "    option httpchk",
        f"    http-check send meth GET uri {health.path}",
        f"    retries {_retries(config)}",
        "    option redispatch 1",
        # The whole request is read before a server is chosen: only a buffered request can be retried.
        "    option http-buffer-request",
        f"    retry-on conn-failure empty-response junk-response response-timeout {statuses}",
        "    http-response set-header X-Routed-To %[srv_name]",
        *_base_path(config.backends),
        f"    default-server inter {_ms(health.interval_seconds)} fall {health.unhealthy_threshold} "
        f"rise {health.healthy_threshold} observe layer7 error-limit {config.ejection.after_failures} "
        "on-error mark-down init-addr last,libc,none",
        *_servers(config.backends),
    ]
    if paths.admin_port is not None:
        lines += ["", f"backend {ADMIN_BACKEND}", f"    server admin 127.0.0.1:{paths.admin_port}"]
    return "\n".join(lines) + "\n"


def write_files(paths: HaproxyPaths, config_text: str, config_file: Path | None = None) -> Path:
    """Write `config_text` to `config_file` (default: haproxy.cfg), and an empty server-state file if there is
    none yet; the configuration file written."""
    paths.directory.mkdir(parents=True, exist_ok=True)
    if not paths.state_file.exists():
        paths.state_file.write_text("1\n")  # the format's version line: no server has a saved state yet
    target = config_file or paths.config_file
    temporary = target.with_suffix(".tmp")
    temporary.write_text(config_text)
    temporary.chmod(0o600)  # it holds the admin token
    temporary.replace(target)
    return target


def _error_page(status: int) -> str:
    """What HAProxy answers itself with `status`: JSON, like the built-in router's errors."""
    message = ERRORS[status]
    body = f'{{"error": "{message}", "hint": "see GET /router/status (admin token) and the model servers"}}'
    return f"    http-error status {status} content-type application/json hdr retry-after 1 string '{body}'"


def check_supported(config: RouterConfig) -> None:
    """`ConfigError` for a setting the haproxy engine cannot honour."""
    if config.retry.hedge_after_seconds is not None:
        raise ConfigError("the haproxy engine has no hedging: unset router.hedge_after_seconds or use --engine builtin")
    unsupported = sorted(config.retry.statuses - RETRYABLE_STATUSES)
    if unsupported:
        raise ConfigError(
            f"the haproxy engine cannot retry on {', '.join(map(str, unsupported))}: "
            f"router.retry_statuses must be among {', '.join(map(str, sorted(RETRYABLE_STATUSES)))}"
        )
    if len({backend.base_path for backend in config.backends}) > 1:
        raise ConfigError(
            "the haproxy engine needs one base path for every backend URL (or none); use --engine builtin"
        )


def _admin_rules(config: RouterConfig, paths: HaproxyPaths) -> list[str]:
    """`/metrics` (HAProxy's Prometheus exporter) and `/router/` (the admin API of `mct route`), behind the token."""
    rules = ["    acl admin_path path /metrics", "    acl admin_path path_beg /router/"]
    if config.admin_token is None:
        rules.append(_json_return(403, "the admin API is off: no admin token is configured", "admin_path"))
    else:
        token = config.admin_token.replace("\\", "\\\\").replace('"', '\\"')
        rules.append(f'    acl admin_token req.hdr(authorization) -m str "Bearer {token}"')
        rules.append(
            _json_return(
                401, "missing or wrong admin token: send Authorization: Bearer TOKEN", "admin_path !admin_token"
            )
        )
    rules.append("    http-request use-service prometheus-exporter if { path /metrics }")
    if paths.admin_port is not None:
        rules.append(f"    use_backend {ADMIN_BACKEND} if {{ path_beg /router/ }}")
    return rules


def _json_return(status: int, message: str, condition: str) -> str:
    return (
        f"    http-request return status {status} content-type application/json "
        f'string \'{{"error": "{message}"}}\' if {condition}'
    )


def _retries(config: RouterConfig) -> int:
    """Tries after the first. HAProxy's redispatch avoids only the server it just tried, so that the tries
    reach every other server (as the built-in engine's do), it gets two per other server at least."""
    return max(config.retry.max_retries, 2 * (len(config.backends) - 1))


def _base_path(backends: tuple[BackendSpec, ...]) -> list[str]:
    base = backends[0].base_path if backends else ""
    return [f"    http-request set-path {base}%[path]"] if base else []


def _servers(backends: tuple[BackendSpec, ...]) -> list[str]:
    heaviest = max(backend.weight for backend in backends)
    lines = []
    for backend in backends:
        weight = max(1, round(MAX_WEIGHT * backend.weight / heaviest))
        options = [f"weight {weight}", "check"]
        if backend.tier > 0:
            options.append("backup")
        if backend.scheme == "https":
            options.append(f"ssl verify required ca-file @system-ca sni str({backend.host}) check-sni {backend.host}")
        lines.append(f"    server {backend.name} {_address(backend.host, backend.port)} {' '.join(options)}")
    if any(backend.tier > 0 for backend in backends):
        lines.append("    option allbackups")
    return lines


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"
