"""Run the router on HAProxy: render and check the configuration, run HAProxy in master-worker mode as a
child process, reload it on SIGHUP without dropping connections, stop it gracefully on SIGTERM.

`mct route --engine haproxy` stays in the foreground as HAProxy's supervisor. It serves the admin API on a
loopback port (HAProxy forwards `/router/` there, behind the token) from HAProxy's runtime API, so that
`/router/status`, drain and undrain look the same with either engine. A reload first saves the servers'
state (drained, down) to the server-state file the new workers load, and the listening sockets pass to
them over the stats socket (`expose-fd listeners`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from serving.router.admin import AdminApi
from serving.router.config import RouterConfig
from serving.router.constants import SHUTDOWN_GRACE_SECONDS
from serving.router.haproxy.control import HaproxyControl
from serving.router.haproxy.render import HaproxyPaths, check_supported, render_config, write_files
from serving.router.haproxy.runtime import RuntimeApi, RuntimeApiError
from serving.router.http_server import HttpServer
from toolkit.errors import ConfigError, ToolkitError

__all__ = ["HaproxyFailed", "find_haproxy", "haproxy_version", "printable_config", "run_haproxy_router"]

logger = logging.getLogger("mct.router")

INSTALL_HINT = (
    "install it (Debian/Ubuntu: apt-get install haproxy; macOS: brew install haproxy) or use --engine builtin"
)
# HAProxy parses its configuration and binds in milliseconds; a loaded machine may take a second or two.
START_TIMEOUT_SECONDS = 15.0
ADMIN_BODY_BYTES = 64 * 1024
DIRECTORY_PREFIX = "mct-haproxy-"
# prctl(2): the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1
# Where `--print-config` says the sockets are: a conventional place for a system-wide HAProxy.
PRINTED_DIRECTORY = Path("/run/mct-router")


class HaproxyFailed(ToolkitError):
    """HAProxy did not start, or exited on its own."""

    exit_code = 1


def find_haproxy() -> str:
    """The haproxy program on PATH; `ConfigError` saying how to install it."""
    binary = shutil.which("haproxy")
    if binary is None:
        raise ConfigError(f"the haproxy engine needs the haproxy program, which is not on PATH: {INSTALL_HINT}")
    return binary


def haproxy_version(binary: str = "haproxy") -> tuple[int, int]:
    """The (major, minor) version of `binary`; (0, 0) if it cannot tell."""
    try:
        output = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return (0, 0)
    match = re.search(r"version (\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def printable_config(config: RouterConfig) -> str:
    """haproxy.cfg for an operator to run anywhere (`haproxy -W -f haproxy.cfg`): sockets under /run/mct-router,
    and without the forward to `mct route`'s admin API (the runtime API is the stats socket)."""
    binary = shutil.which("haproxy")
    version = haproxy_version(binary) if binary else (0, 0)
    return render_config(config, HaproxyPaths(PRINTED_DIRECTORY), config.metrics_port, version)


def run_haproxy_router(config: RouterConfig, reload_config: Callable[[], RouterConfig] | None = None) -> None:
    """Supervise HAProxy routing by `config` until SIGTERM or SIGINT (graceful); SIGHUP reloads."""
    check_supported(config)
    binary = find_haproxy()
    # Socket paths must stay short (108 bytes), so not under a deep data directory.
    _remove_orphaned_directories()
    directory = Path(tempfile.mkdtemp(prefix=f"{DIRECTORY_PREFIX}{os.getpid()}-"))
    try:
        try:
            import uvloop
        except ImportError:  # uvloop is not built for Windows
            asyncio.run(_supervise(binary, config, reload_config, directory))
        else:
            uvloop.run(_supervise(binary, config, reload_config, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _remove_orphaned_directories() -> None:
    """Runtime directories of supervisors that were killed (SIGKILL leaves no chance to clean up)."""
    if not Path("/proc/self").is_dir():  # no way to tell a live supervisor here: leave them
        return
    for folder in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*-*"):
        pid = folder.name.removeprefix(DIRECTORY_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists() and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


async def _supervise(
    binary: str, config: RouterConfig, reload_config: Callable[[], RouterConfig] | None, directory: Path
) -> None:
    loop = asyncio.get_running_loop()
    runtime = RuntimeApi(directory / "runtime.sock")
    control = HaproxyControl(runtime, config)
    admin = AdminApi(control, config.admin_token)
    admin_server = HttpServer(admin.handle, ADMIN_BODY_BYTES)
    paths = HaproxyPaths(directory, await admin_server.start("127.0.0.1", 0))
    version = haproxy_version(binary)
    _install(binary, render_config(config, paths, config.metrics_port, version), paths)
    process = await asyncio.create_subprocess_exec(
        binary, "-W", "-db", "-f", str(paths.config_file), stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
    )
    control.haproxy_pid = process.pid
    try:
        await _wait_ready(runtime, process)
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        if reload_config is not None:
            loop.add_signal_handler(
                signal.SIGHUP, lambda: _reload(binary, version, reload_config, paths, control, admin, process)
            )
        admin_state = "on" if config.admin_token else "off (no admin token)"
        logger.info(
            "routing http://%s:%d on HAProxy (pid %d): %s; admin API %s",
            config.host,
            config.port,
            process.pid,
            ", ".join(f"{spec.name}={spec.url}" for spec in config.backends),
            admin_state,
        )
        exited = asyncio.create_task(process.wait())
        stop = asyncio.create_task(stopping.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            raise HaproxyFailed(f"HAProxy exited on its own with status {process.returncode}; see its messages above")
        stop.cancel()
        logger.info("stopping: HAProxy stops listening and finishes the requests in flight")
        await _stop(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await admin_server.stop(0.5)


def _install(binary: str, text: str, paths: HaproxyPaths) -> None:
    """Check `text` with `haproxy -c`, then make it the configuration HAProxy (re)loads."""
    candidate = write_files(paths, text, paths.directory / "candidate.cfg")
    check = subprocess.run([binary, "-c", "-f", str(candidate)], capture_output=True, text=True)
    if check.returncode != 0:
        lines = [line for line in check.stderr.splitlines() if "ALERT" in line] or check.stderr.splitlines()
        first = lines[0].strip() if lines else f"haproxy -c exited with {check.returncode}"
        raise ConfigError(f"HAProxy refused the rendered configuration: {first}")
    candidate.replace(paths.config_file)


async def _wait_ready(runtime: RuntimeApi, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise HaproxyFailed(f"HAProxy exited while starting (status {process.returncode}); see its messages above")
        try:
            if "Pid:" in runtime.command("show info"):
                return
        except RuntimeApiError:
            pass
        await asyncio.sleep(0.05)
    raise HaproxyFailed(f"HAProxy did not answer on its runtime socket within {START_TIMEOUT_SECONDS:.0f} s")


def _reload(
    binary: str,
    version: tuple[int, int],
    reload_config: Callable[[], RouterConfig],
    paths: HaproxyPaths,
    control: HaproxyControl,
    admin: AdminApi,
    process: asyncio.subprocess.Process,
) -> None:
    """Re-read the configuration; if HAProxy accepts it, save the servers' state and reload the workers."""
    try:
        config = reload_config()
        text = render_config(config, paths, config.metrics_port, version)
        paths.state_file.write_text(control.runtime.servers_state())
        _install(binary, text, paths)
    except ToolkitError as exc:
        logger.error("configuration not reloaded, the previous one stays: %s", exc)
        return
    control.config = config
    admin.token = config.admin_token
    process.send_signal(signal.SIGUSR2)  # master-worker reload: new workers take over the listeners
    control.reloads += 1
    logger.info("configuration reloaded: %s", ", ".join(f"{spec.name}={spec.url}" for spec in config.backends))


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when `mct route` dies, even by SIGKILL, so that no orphaned
    HAProxy keeps the port (Linux only; elsewhere a killed supervisor leaves HAProxy running)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Soft stop (SIGUSR1: stop listening, finish what is in flight), then SIGTERM, then SIGKILL."""
    for signum, grace in ((signal.SIGUSR1, SHUTDOWN_GRACE_SECONDS), (signal.SIGTERM, 2.0)):
        process.send_signal(signum)
        try:
            await asyncio.wait_for(process.wait(), grace)
            return
        except TimeoutError:
            continue
    process.kill()
    await process.wait()
