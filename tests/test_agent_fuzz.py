"""Property-based fuzzing: arbitrary bytes on one connection never disturb another."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from agent_helpers import Client, close_clients, register_tiny, req, row_point
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import contract
from models.registry import Registry
from udf_agent.protocol import messages as pb
from udf_agent.protocol.codec import encode_frame
from udf_agent.server import AgentConfig, AgentServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    reg = Registry(root / "registry")
    register_tiny(reg)
    srv = AgentServer(
        AgentConfig(socket_path=root / "udf.sock", registry=reg.root), registry=reg
    ).start()
    yield srv
    srv.stop()
    close_clients()


def _valid_request_bytes() -> st.SearchStrategy[bytes]:
    """Well-formed frames of random requests, to mix with garbage."""
    ka = st.integers(min_value=-(2**63), max_value=2**63 - 1).map(
        lambda t: encode_frame(
            pb.Request(keepalive=pb.KeepaliveRequest(time=t)).SerializeToString()
        )
    )
    snap = st.binary(max_size=64).map(
        lambda b: encode_frame(
            pb.Request(restore=pb.RestoreRequest(snapshot=b)).SerializeToString()
        )
    )
    info = st.just(encode_frame(pb.Request(info=pb.InfoRequest()).SerializeToString()))
    return st.one_of(ka, snap, info)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chunks=st.lists(
        st.one_of(st.binary(min_size=1, max_size=300), _valid_request_bytes()),
        min_size=1,
        max_size=8,
    )
)
def test_garbage_on_one_connection_leaves_others_unaffected(fuzz_server, chunks):
    path = fuzz_server.config.socket_path
    good = Client(path)
    assert good.init({"model": "creditcard", "maxDelay": ("duration", 0)}).success
    rows = np.random.default_rng(len(chunks)).normal(size=(3, len(contract.FEATURES)))
    good.send(req(point=row_point(rows[0], t=1, txn="a")))

    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.settimeout(5)
    bad.connect(str(path))
    try:
        for chunk in chunks:
            bad.sendall(chunk)
        bad.shutdown(socket.SHUT_WR)
        # the agent answers or closes, but always ends the connection cleanly
        deadline = time.time() + 5
        while time.time() < deadline:
            if not bad.recv(65536):
                break
        else:
            pytest.fail("agent did not close the fuzzed connection after the half-close")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the agent closed it while we were still writing: fine
    finally:
        bad.close()

    good.send(req(point=row_point(rows[1], t=2, txn="b")))
    good.send(req(keepalive=pb.KeepaliveRequest(time=7)))
    assert good.recv_kind("keepalive").keepalive.time == 7
    pts = good.recv_points(2)
    assert [p.fieldsString["txn_id"] for p in pts] == ["a", "b"]
    assert all("score" in p.fieldsDouble for p in pts)
    good.close()
