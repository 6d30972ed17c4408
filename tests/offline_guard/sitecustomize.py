"""The offline guard: any Python process started with this folder on PYTHONPATH refuses to reach
beyond loopback. Attempts are refused and appended to the file named by OFFLINE_GUARD_LOG, so a
test can assert that none happened, in the process and in every child it started.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("OFFLINE_GUARD_LOG")
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", socket.gethostname()}
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo


def _is_local(host: object) -> bool:
    if host is None or host == "":
        return True
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in _LOCAL_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _refuse(what: str) -> None:
    if _LOG:
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(f"pid {os.getpid()} {' '.join(sys.argv[:3])}: {what}\n")


def _guarded_connect(self: socket.socket, address: object) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):  # type: ignore[index]
        _refuse(f"connect {address!r}")
        raise OSError(errno.ENETUNREACH, f"offline guard: connection to {address!r} refused")
    return _connect(self, address)  # type: ignore[arg-type]


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_local(address[0]):  # type: ignore[index]
        _refuse(f"connect_ex {address!r}")
        return errno.ENETUNREACH
    return _connect_ex(self, address)  # type: ignore[arg-type]


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if not _is_local(host):
        _refuse(f"resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"offline guard: lookup of {host!r} refused")
    return _getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


if _LOG:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]
