"""signaling/diameter/tracing.py: a Credit-Control session is one trace.

A real DiameterServer with tracing on exports over OTLP/HTTP to a receiver that decodes with
``opentelemetry-proto`` (tests/otlp.py); a client over TCP runs CCR-Initial, -Update and
-Termination of one session.
"""

from __future__ import annotations

from protocols.diameter.constants import CCRequestType
from signaling.diameter import DiameterServer
from signaling.metrics import Metrics
from signaling.registry.memory import MemoryRegistry
from signaling.tracing import Tracing
from tests.otlp import attributes, receiver
from tests.protocols.diameter.factory import ccr
from tests.signaling.diameter.client import Client, result_code
from tests.signaling.diameter.conftest import make_config


async def test_a_credit_control_session_is_one_trace_of_its_requests() -> None:
    async with receiver() as (rx, endpoint):
        metrics = Metrics()
        tracing = Tracing(endpoint=endpoint, sample=1.0, node_id="dia-test", metrics=metrics)
        server = DiameterServer(make_config(), metrics, MemoryRegistry(), tracing)
        await server.start()
        client = await Client.connect(server.port)
        try:
            await client.handshake()
            sid = "client.test;7;7"
            for number, rtype in enumerate((CCRequestType.INITIAL_REQUEST,
                                            CCRequestType.UPDATE_REQUEST,
                                            CCRequestType.TERMINATION_REQUEST)):
                await client.send(ccr(sid, rtype, number, hbh=100 + number, used=10))
                assert result_code(await client.recv()) == 2001
            sessions = await rx.wait_for("Diameter Credit-Control session")
            requests = await rx.wait_for("Diameter 272", count=3)
        finally:
            await client.close()
            await server.close(1.0)
            tracing.shutdown()
    session = sessions[0]
    assert all(r.trace_id == session.trace_id and r.parent_span_id == session.span_id
               for r in requests)
    assert [attributes(r)["diameter.result_code"] for r in requests] == [2001, 2001, 2001]
    attrs = attributes(session)
    assert attrs["rpc.system"] == "diameter" and attrs["net.peer.name"] == "client.test"
    assert attrs["diameter.session_id"] != sid  # a keyed hash by default
