"""The MCP SDK's own guards, as the endpoint (:mod:`service.server.mcp_endpoint`)
configures them: its Host/Origin check, and the sealing of ``requestState``.

The SDK seals every ``requestState`` (the client-echoed state of a
2026-07-28 multi-round-trip request, such as an elicitation) with
AES-256-GCM under a key of this process. Its default policy derives that key
when the server is built, and that first HKDF call initialises the OpenSSL
inside ``cryptography`` (about 1.4 MB resident) in every server whose clients
never make such a request. :class:`EphemeralCodec` is the same codec under the
same kind of key, built on the first seal or unseal instead.
"""

from __future__ import annotations

import os

from mcp.server.request_state import AESGCMRequestStateCodec, RequestStateSecurity
from mcp.server.transport_security import TransportSecuritySettings

from service.hosts import is_loopback_host
from service.settings import Settings

#: Bytes of the process-local secret, as the SDK's ``RequestStateSecurity.ephemeral``.
KEY_BYTES = 32


class EphemeralCodec:
    """The SDK's :class:`AESGCMRequestStateCodec` under a key drawn now and
    held only by this process, built on first use (see the module's docstring).

    Tokens are those of the SDK's ephemeral policy: sealed state round-trips,
    and a token this process did not mint, or one altered, is refused with
    ``InvalidRequestState``. Both methods run on the event loop (the SDK's
    request-state boundary calls them there), so the build needs no lock.
    """

    def __init__(self) -> None:
        self._secret = os.urandom(KEY_BYTES)
        self._codec: AESGCMRequestStateCodec | None = None

    @property
    def built(self) -> bool:
        """Whether the cipher exists yet (a first seal or unseal happened)."""
        return self._codec is not None

    def _cipher(self) -> AESGCMRequestStateCodec:
        if self._codec is None:
            self._codec = AESGCMRequestStateCodec([self._secret])
        return self._codec

    def seal(self, payload: bytes) -> str:
        return self._cipher().seal(payload)

    def unseal(self, token: str) -> bytes:
        return self._cipher().unseal(token)


def request_state_security() -> RequestStateSecurity:
    """The SDK's default policy (TTL, principal binding, the server's name as
    audience) over an :class:`EphemeralCodec`."""
    return RequestStateSecurity(codec=EphemeralCodec())


def transport_security(settings: Settings) -> TransportSecuritySettings:
    """The SDK's Host/Origin check, on a loopback bind only: there it closes
    DNS rebinding (a foreign name resolving to 127.0.0.1). Elsewhere the
    token and our Origin check guard the endpoint, as for the WebSocket."""
    if not is_loopback_host(settings.host):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = ["127.0.0.1", "localhost", "[::1]"]
    origins = [f"{scheme}://{name}:*" for scheme in ("http", "https") for name in names]
    origins += [f"{scheme}://{name}" for scheme in ("http", "https") for name in names]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection="*" not in settings.allowed_origins,
        allowed_hosts=[f"{name}:*" for name in names] + names,
        allowed_origins=origins + list(settings.allowed_origins),
    )
