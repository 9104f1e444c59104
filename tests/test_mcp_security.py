"""The MCP endpoint's ``requestState`` sealing, built on first use
(:mod:`service.server.mcp_security`): the SDK's codec and policy, unchanged
but for when the key is derived."""

from __future__ import annotations

import base64

import anyio
import pytest
from mcp import Client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.request_state import InvalidRequestState, RequestStateSecurity
from mcp_types import CallToolResult, InputRequiredResult, TextContent

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


def test_a_multi_round_trip_request_seals_its_state_through_the_lazy_codec() -> None:
    """A 2026-07-28 tool that asks for another round: the SDK's boundary seals
    the state with the codec (built then), the client echoes the token, and the
    tool sees its own plaintext on the retry."""
    policy = request_state_security()
    codec = policy.codec
    assert isinstance(codec, EphemeralCodec)
    sealed: list[str] = []
    seal = codec.seal

    def recording_seal(payload: bytes) -> str:
        sealed.append(seal(payload))
        return sealed[-1]

    codec.seal = recording_seal  # type: ignore[method-assign]
    server = MCPServer("cc-executor", request_state_security=policy)
    seen: list[str | None] = []

    @server.tool()
    async def step(ctx: Context) -> InputRequiredResult | CallToolResult:
        seen.append(ctx.request_state)
        if ctx.request_state is None:
            return InputRequiredResult(request_state="round-2")
        return CallToolResult(content=[TextContent(type="text", text=ctx.request_state)])

    async def main() -> CallToolResult:
        assert not codec.built
        async with Client(server, mode="2026-07-28") as client:
            return await client.call_tool("step", {})

    result = anyio.run(main)
    assert result.content[0].text == "round-2"  # type: ignore[union-attr]
    assert seen == [None, "round-2"]
    assert codec.built and len(sealed) == 1
    assert sealed[0].startswith("v1.") and "round-2" not in sealed[0]
