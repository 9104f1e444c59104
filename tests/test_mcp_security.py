"""The MCP endpoint's ``requestState`` sealing, built on first use
(:mod:`service.server.mcp_security`): the SDK's codec and policy, unchanged
but for when the key is derived."""

from __future__ import annotations

import base64

import pytest
from mcp.server.mcpserver import MCPServer
from mcp.server.request_state import InvalidRequestState, RequestStateSecurity

from service.server.mcp_security import EphemeralCodec, request_state_security


def test_the_codec_is_built_on_first_use_and_round_trips() -> None:
    codec = EphemeralCodec()
    assert not codec.built
    token = codec.seal(b'{"step": 2}')
    assert codec.built
    assert token.startswith("v1.") and b"step" not in token.encode()
    assert codec.unseal(token) == b'{"step": 2}'
    # A token sealed before a restart unseals only in the process that minted it.
    fresh = EphemeralCodec()
    assert fresh.unseal(fresh.seal(b"x")) == b"x"
    with pytest.raises(InvalidRequestState):
        EphemeralCodec().unseal(token)


def test_the_codec_refuses_altered_and_malformed_tokens() -> None:
    codec = EphemeralCodec()
    token = codec.seal(b"payload")
    raw = bytearray(base64.urlsafe_b64decode(token[3:] + "=" * (-len(token[3:]) % 4)))
    raw[-1] ^= 1
    altered = "v1." + base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in (altered, "v1.AAAA", "v2." + token[3:], ""):
        with pytest.raises(InvalidRequestState):
            codec.unseal(bad)
    # An unseal as the first use builds the cipher too, and refuses.
    first = EphemeralCodec()
    with pytest.raises(InvalidRequestState):
        first.unseal(token)
    assert first.built


def test_the_policy_is_the_sdks_default_over_the_lazy_codec() -> None:
    ours = request_state_security()
    sdk = RequestStateSecurity.ephemeral()
    assert isinstance(ours.codec, EphemeralCodec) and not ours.codec.built
    assert (ours.ttl, ours.audience, ours.bind_principal) == (
        sdk.ttl,
        sdk.audience,
        sdk.bind_principal,
    )
    # Building the SDK's server with it derives no key yet.
    MCPServer("cc-executor", request_state_security=ours)
    assert not ours.codec.built
