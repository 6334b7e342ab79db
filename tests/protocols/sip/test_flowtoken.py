"""protocols/sip/flowtoken.py: flow tokens read back what they were made from, with the key
they were made with only, and anything altered, truncated or made up reads as None."""

from __future__ import annotations

import re

import pytest

from protocols.sip.flowtoken import TOKEN_PREFIX, Flow, FlowTokens

FLOWS = [Flow("tcp", "192.0.2.7", 50123, "node-1/tcp/42", "node-1"),
         Flow("udp", "2001:db8::1", 5060, None, "node-2"),
         Flow("wss", "198.51.100.3", 443, "node-1/wss/7", "node-1")]


@pytest.mark.parametrize("flow", FLOWS)
def test_a_token_reads_back_its_flow_and_is_a_plain_user_part(flow: Flow) -> None:
    tokens = FlowTokens(b"secret")
    token = tokens.make(flow)
    assert token.startswith(TOKEN_PREFIX)
    assert re.fullmatch(r"ft\.[a-z2-7]+", token)  # §25.1 unreserved: no escaping in a URI
    assert tokens.read(token) == flow


def test_another_key_altered_or_made_up_tokens_read_as_none() -> None:
    tokens = FlowTokens(b"secret")
    token = tokens.make(FLOWS[0])
    assert FlowTokens(b"other").read(token) is None
    body = token[len(TOKEN_PREFIX):]
    for i in range(len(body)):  # every single-character change
        changed = body[:i] + ("a" if body[i] != "a" else "b") + body[i + 1:]
        assert tokens.read(TOKEN_PREFIX + changed) is None
    for bad in (None, "", "ft.", "ft.!!", "alice", token[:-4], "ft." + "a" * 500,
                token.upper()):
        assert tokens.read(bad) is None
