"""`free_port`: ports for the runners' servers lie below the kernel's ephemeral range, where no outgoing connection
takes them, and are free when given."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from dags.ops import processes
from dags.ops.processes import PORT_FLOOR, StackError, ephemeral_ports, free_port


def listening_on(ports: range) -> contextlib.ExitStack:
    """Listeners on every port of `ports` that is free (the test asserts on the ones it got)."""
    stack = contextlib.ExitStack()
    for port in ports:
        sock = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            sock.listen()
    return stack


def test_the_ephemeral_range_is_read_from_the_kernel_s_file(tmp_path: Path) -> None:
    (tmp_path / "range").write_text("20000\t50000\n")
    assert ephemeral_ports(tmp_path / "range") == (20000, 50000)
    assert ephemeral_ports(tmp_path / "missing") == processes.DEFAULT_EPHEMERAL_PORTS


def test_ports_lie_below_the_ephemeral_range_and_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    low = PORT_FLOOR + 2000
    monkeypatch.setattr(processes, "ephemeral_ports", lambda: (low, 60999))
    ports = [free_port() for _ in range(50)]
    assert all(PORT_FLOOR <= port < low for port in ports), ports
    assert len(set(ports)) > 40, ports  # picked at random, not one port for every caller
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_port_something_listens_on_is_never_given(monkeypatch: pytest.MonkeyPatch) -> None:
    candidates = range(PORT_FLOOR, PORT_FLOOR + 4)
    monkeypatch.setattr(processes, "ephemeral_ports", lambda: (candidates.stop, 60999))
    with listening_on(range(candidates.start, candidates.stop - 1)):
        assert {free_port() for _ in range(20)} == {candidates.stop - 1}
    with listening_on(candidates), pytest.raises(StackError, match=f"no free port in \\[{PORT_FLOOR}, "):
        free_port()


def test_a_range_starting_below_the_floor_falls_back_to_the_kernel_s_pick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "ephemeral_ports", lambda: (1024, 65535))
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
