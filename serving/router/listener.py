"""The router's listening socket, optionally in a SO_REUSEPORT group for a hand-over without lost requests.

An operator upgrades a router the way HAProxy and Envoy reload: the new process binds the same address
with SO_REUSEPORT and listens; then the old one gets SIGTERM, closes its listener, answers what it has and
closes its connections. Linux spreads new connections over the sockets of a group by a hash, and a
connection still waiting in the accept queue of a socket that closes is reset. So a socket that joins a
group steers every new connection to itself (a one-instruction classic BPF program, attached to the group,
that selects the new socket's index), and from then on the old socket's queue only empties.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import socket
import sys
from pathlib import Path

from toolkit.errors import ConfigError

__all__ = ["open_listener"]

BACKLOG = 1024
# From <asm-generic/socket.h>; Python's socket module does not name it.
SO_ATTACH_REUSEPORT_CBPF = 51
# BPF_RET | BPF_K: "return the constant k", here the index of the socket that takes the connection.
BPF_RET_K = 0x06
TCP_LISTEN = "0A"


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def open_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking socket listening on host:port; with `reuse_port`, one that takes over from its group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            hint = " (another router? a hand-over needs --reuse-port on both)" if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None
        # Sockets join the group when they listen, each at the end: the ones listening before are 0..n-1.
        index = _listeners(family, host, sock.getsockname()[1]) if reuse_port else 0
        sock.listen(BACKLOG)
        if index:
            _steer_to(sock, index)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _steer_to(sock: socket.socket, index: int) -> None:
    """Attach to `sock`'s group a program that gives every new connection to the socket at `index`.

    When an older socket closes, the kernel moves the last one into its slot; an index past the end then
    falls back to the hash, so the program needs no update when the old router leaves.
    """
    program = (_SockFilter * 1)(_SockFilter(BPF_RET_K, 0, 0, index))
    fprog = _SockFprog(1, program)
    # Not Linux, or a kernel without it: the hash spreads new connections, and a hand-over may reset a few.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))


def _listeners(family: int, host: str, port: int) -> int:
    """How many sockets already listen on host:port in this network namespace (from /proc/net/tcp*)."""
    table = Path("/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp")
    packed = socket.inet_pton(family, host)
    # The kernel prints each 32-bit word of the address in host byte order.
    step = -1 if sys.byteorder == "little" else 1
    address = "".join(packed[i : i + 4][::step].hex() for i in range(0, len(packed), 4)).upper()
    wanted = f"{address}:{port:04X}"
    try:
        lines = table.read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for line in lines if (fields := line.split())[1] == wanted and fields[3] == TCP_LISTEN)
