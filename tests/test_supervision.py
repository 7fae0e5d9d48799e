"""`podium up` supervises its children (starter/runtime.py).

1. Pure: a child that exits is restarted after a backoff that doubles up to a cap and resets
   once the child has run long enough; the other children are left alone.
2. `podium up` itself: the worker is killed, the API keeps answering and accepts a case, the
   worker is started again and carries the case to the approval gate; then the API is killed and
   comes back while the worker keeps running; SIGTERM still stops everything with code 0.
3. `podium up` killed with SIGKILL: none of its children (dev server, worker, API, codec server)
   outlives it, and the Temporal port is free again.

No assertion measures time: waits poll for an end state under a generous bound that only trips
when something is stuck.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from starter import runtime
from starter.runtime import RESTART_BACKOFF_MAX, RESTART_STABLE_AFTER, Supervisor
from tests.podium_stack import PodiumUp, alive, eventually

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the kill-with-parent guarantee is Linux's"
)


# --- the supervisor, with a fake clock and real short-lived processes --------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def child(name: str, code: str) -> runtime._Child:
    return runtime._Child(name, [sys.executable, "-c", code], dict(os.environ))


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [Supervisor.backoff(n) for n in range(1, 10)]
    assert [1.0, 2.0, 4.0, 8.0, 16.0] == delays[:5]
    assert all(d == RESTART_BACKOFF_MAX for d in delays[5:])


def test_an_exited_child_restarts_after_backoff_and_the_others_are_left_alone() -> None:
    clock = Clock()
    supervisor = Supervisor(clock=clock)
    try:
        crashing = supervisor.add(child("crashing", "raise SystemExit(3)"))
        steady = supervisor.add(child("steady", "import time; time.sleep(600)"))
        assert crashing.process is not None
        crashing.process.wait(timeout=60)

        supervisor.check()  # seen exiting: restart scheduled, not yet done
        assert crashing.restart_at == clock.now + 1.0 and 1 == len(crashing.history)
        clock.now += 1.0
        supervisor.check()  # backoff over: started again
        assert 2 == len(crashing.history)
        assert crashing.process is not None
        crashing.process.wait(timeout=60)
        supervisor.check()
        assert crashing.restart_at == clock.now + 2.0  # it failed again at once: doubled

        clock.now += 2.0
        supervisor.check()
        assert crashing.process is not None
        crashing.process.wait(timeout=60)
        clock.now += RESTART_STABLE_AFTER  # it had run long enough: back to the shortest wait
        supervisor.check()
        assert crashing.restart_at == clock.now + 1.0

        assert 1 == len(steady.history) and not steady.exited()
    finally:
        supervisor.stop()
    assert steady.process is not None and steady.process.returncode is not None


def test_a_child_is_killed_when_its_supervisor_dies(tmp_path: Path) -> None:
    """The kernel-level guarantee on its own: a supervisor killed with SIGKILL takes its
    (sleeping, session-leading) child with it."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import sys, time\n"
        "from starter import runtime\n"
        "sleep = [sys.executable, '-c', 'import time; time.sleep(600)']\n"
        "c = runtime._Child('sleeper', sleep, {})\n"
        "c.start()\n"
        f"open({str(pid_file)!r}, 'w').write(str(c.process.pid))\n"
        "time.sleep(600)\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parents[1])
    try:
        pid = int(eventually(lambda: pid_file.exists() and pid_file.read_text(), "the child"))
        assert alive(pid)
        supervisor.kill()
        supervisor.wait(timeout=60)
        eventually(lambda: not alive(pid), "the orphan to die")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()


# --- `podium up` ---------------------------------------------------------------------------------


@pytest.fixture
def up(tmp_path: Path) -> Iterator[PodiumUp]:
    stack = PodiumUp(tmp_path / "var")
    try:
        yield stack
    finally:
        stack.close()


def answers(url: str, **kwargs: object) -> int | None:
    try:
        return httpx.get(url, timeout=10, **kwargs).status_code  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def case_status(up: PodiumUp, case_id: str, token: str) -> str | None:
    response = httpx.get(
        f"{up.api_url}/cases/{case_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    state = response.json().get("state") if response.status_code == 200 else None
    return str(state["status"]) if state else None


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_crashed_worker_or_api_restarts_while_the_rest_keeps_serving(up: PodiumUp) -> None:
    up.start()
    first = up.children()
    assert {"temporal", "worker", "api", "codec"} <= set(first)
    service = up.token("service:demo", ["service"])

    os.kill(first["worker"], signal.SIGKILL)
    # With the worker down the API still answers and still accepts a case...
    assert 200 == answers(f"{up.api_url}/healthz")
    created = httpx.post(
        f"{up.api_url}/cases/refund",
        json={
            "channel": "email",
            "customer_id": "C-1002",
            "order_id": "O-5003",
            "message": "My order O-5003 arrived broken, I want my money back",
        },
        headers={"Authorization": f"Bearer {service}", "Idempotency-Key": uuid.uuid4().hex},
        timeout=60,
    )
    assert 201 == created.status_code, created.text
    case_id = created.json()["case_id"]
    # ...and a new worker picks the case up and parks it at the approval gate.
    eventually(lambda: len(up.pids("worker")) == 2, "the worker to be restarted")
    restarted = up.records("process_restarted")
    assert ["worker"] == [r["process"] for r in restarted]
    exited = up.records("process_exited")
    assert first["worker"] == exited[0]["pid"] and -signal.SIGKILL == exited[0]["code"]
    eventually(
        lambda: case_status(up, case_id, service) == "awaiting_approval",
        "the case to reach the approval gate",
        timeout=300,
    )

    os.kill(first["api"], signal.SIGKILL)
    eventually(lambda: len(up.pids("api")) == 2, "the API to be restarted")
    eventually(lambda: answers(f"{up.api_url}/healthz") == 200, "the new API to answer")
    assert "awaiting_approval" == case_status(up, case_id, service)

    now = up.children()
    assert first["temporal"] == now["temporal"] and first["codec"] == now["codec"]
    assert up.pids("worker")[-1] == now["worker"]  # the worker was not touched by the API's fall

    # A service manager's stop (SIGTERM) still stops everything in order, cleanly.
    assert up.process is not None
    up.process.send_signal(signal.SIGTERM)
    assert 0 == up.process.wait(timeout=120)
    assert not any(alive(pid) for pid in now.values())
    # Every child podium up started (the embedded SCIM directory too), each stopped.
    assert set(now) == {r["process"] for r in up.records("process_stopped")}


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        # As a restarted server binds: only a listener still holding the port is in the way.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_no_child_outlives_a_podium_up_killed_with_sigkill(up: PodiumUp) -> None:
    up.start()
    children = up.children()
    assert {"temporal", "worker", "api", "codec"} <= set(children)
    assert all(alive(pid) for pid in children.values())
    assert up.process is not None

    up.process.kill()  # SIGKILL: no handler runs, nothing is stopped in order
    up.process.wait(timeout=60)

    for name, pid in children.items():

        def gone(pid: int = pid) -> bool:
            return not alive(pid)

        eventually(gone, f"{name} (pid {pid}) to die with its parent")
    eventually(lambda: port_free(up.temporal_port), "the Temporal port to be free")
    eventually(lambda: port_free(up.ui_port), "the Temporal UI port to be free")
