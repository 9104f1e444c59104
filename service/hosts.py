"""Host names: which ones are this machine. Pure code, shared by the server's
Origin/Host checks and the client's choice of a default working directory."""

from __future__ import annotations

import ipaddress


def is_loopback_host(hostname: str | None) -> bool:
    """``localhost`` (and ``*.localhost``), 127.0.0.0/8 or ::1."""
    if not hostname:
        return False
    name = hostname.lower().strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
