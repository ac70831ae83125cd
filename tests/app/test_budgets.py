"""GPU-hour budgets (app/budgets.py) and start estimates, end to end through a real service process with
the local launcher and the stand-in trainer (one CPU slot: CPU runs count in CPU-hours, the same mechanism
as GPU-hours). Real clock: budgets here are a few seconds of run time."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import httpx
import pytest
from service_helpers import ServiceProcess, wait_for

from app.budgets import Ledger
from app.store import QueueEntry
from app.store.ledger import Ran

FAST = {"LABRUN_PREEMPT_MIN_RUN_S": "0", "LABRUN_PREEMPT_GRACE_S": "2", "LABRUN_MAX_CPU_RUNS": "1"}
HOUR = 3600.0


def test_the_ledger_counts_each_attempt_once_within_the_window_and_running_runs_up_to_now() -> None:
    ledger = Ledger(window_s=100.0)
    failed = Ran("a", 1, "ana", 2, 850.0, 950.0)
    ledger.add([failed, failed._replace(), Ran("a", 2, "ana", 2, 960.0, 970.0), Ran("c", 1, "ben", 0, 0, 50)])
    running = [QueueEntry(1, "b", "ana", 1, 990.0, "normal")]
    used = ledger.used(1000.0, running)
    # a: 50 s of its first attempt inside the window x 2 GPUs, 10 s of its second x 2; b: 10 s x 1
    assert used == {("ana", "gpu"): 50 * 2 + 10 * 2 + 10}
    ledger.prune(1000.0)
    assert used == ledger.used(1000.0, running)
    # the window moves on: [940, 1040]; the first attempt straddles its start, c left it long ago
    assert ledger.used(1040.0, running) == {("ana", "gpu"): 10 * 2 + 10 * 2 + 50}
    assert ledger.used(1100.0, []) == {}  # everything ended before the window


def _user(svc: ServiceProcess, *args: str) -> str:
    return svc.admin("users", *args)


@pytest.fixture
def lab(output_dir) -> Iterator[tuple[ServiceProcess, httpx.Client, httpx.Client]]:
    svc = ServiceProcess(output_dir, **FAST)
    ana = _user(svc, "add", "ana")
    ben = _user(svc, "add", "ben")
    _user(svc, "limits", "ana", "--cpu-hours", str(1.0 / HOUR))  # one second of CPU run time per window
    svc.start()
    clients = [
        httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {t}"}, timeout=30)
        for t in (ana, ben)
    ]
    try:
        yield svc, clients[0], clients[1]
    finally:
        for client in clients:
            for run in client.get("/runs", params={"status": "running,queued"}).json()["data"]:
                client.post(f"/runs/{run['name']}/cancel")
            client.close()
        svc.stop()


def post(client: httpx.Client, *overrides: str) -> str:
    response = client.post("/runs", json={"overrides": list(overrides)})
    assert response.status_code == 201, response.text
    return response.json()["name"]


def until(check, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def ran_s(client: httpx.Client, name: str) -> float:
    """Its running time over all its attempts, as the API shows their times."""
    run = client.get(f"/runs/{name}").json()
    spans = [(run["started_at"], run["finished_at"])]
    spans += [
        (a["started_at"], a["finished_at"]) for a in client.get(f"/runs/{name}/attempts").json()["attempts"]
    ]
    return sum(_stamp(end) - _stamp(start) for start, end in spans if start is not None and end is not None)


def _stamp(value: str | float) -> float:
    return value if isinstance(value, int | float) else dt.datetime.fromisoformat(value).timestamp()


def cpu(client: httpx.Client) -> dict:
    return next(b for b in client.get("/me/usage").json()["budgets"] if b["pool"] == "cpu")


def test_over_budget_runs_as_low_is_preempted_by_a_normal_run_and_the_balance_is_right(lab) -> None:
    _svc, ana, ben = lab
    first = post(ana, "+extra.fake_sleep=2")
    wait_for(ana, first, {"succeeded"}, timeout=60)
    # the balance after the run ended: its running time, in hours
    took = ran_s(ana, first)
    # (the totals are kept for up to half a second after a write: a busy store writes many times a second)
    balance = until(lambda: abs((b := cpu(ana))["used_hours"] * HOUR - took) < 0.05 and b, what="the balance")
    assert balance["over"] is True
    assert balance["budget_hours"] == pytest.approx(1.0 / HOUR)
    assert cpu(ben)["over"] is False
    assert cpu(ben)["budget_hours"] is None

    # over budget: her next run still queues, and starts as low (preemptible), and says so
    low = post(ana, "+extra.fake_sleep=60")
    wait_for(ana, low, {"running"}, timeout=60)
    until(lambda: ": line 1" in ana.get(f"/runs/{low}/logs").text, what="its first line")
    shown = until(lambda: (r := ana.get(f"/runs/{low}").json())["runs_as"] and r, what="runs_as")
    assert shown["priority"] == "normal"
    assert shown["runs_as"] == "low"
    assert "over budget" in shown["runs_as_reason"]

    # a normal run of a user under budget preempts it; it queues again, over budget, with an estimate
    normal = post(ben, "+extra.fake_sleep=3")
    wait_for(ben, normal, {"running"}, timeout=60)
    requeued = until(
        lambda: (r := ana.get(f"/runs/{low}").json())["status"] == "queued" and r.get("estimate") and r,
        what="the low run back in the queue with an estimate",
    )
    assert requeued["attempts"] == 2
    assert requeued["runs_as"] == "low"
    assert requeued["waiting_reason"].startswith("over budget: runs as low")
    assert requeued["estimate"]["reason"].startswith("over budget: runs as low")
    assert f"run {normal} ends in" in requeued["estimate"]["reason"]
    assert requeued["estimate"]["start_at"] is not None

    queue = ana.get("/queue").json()["users"]
    assert queue["ana"]["queued"][0]["runs_as"] == "low"
    assert queue["ana"]["queued"][0]["estimate"]["start_at"] is not None
    assert next(b for b in queue["ana"]["budgets"] if b["pool"] == "cpu")["over"] is True

    # the balance counts every attempt: the first run's, and the preempted attempt's
    ana.post(f"/runs/{low}/cancel")
    wait_for(ana, low, {"cancelled"}, timeout=60)
    expected = ran_s(ana, first) + ran_s(ana, low)
    until(
        lambda: abs(cpu(ana)["used_hours"] * HOUR - expected) < 0.05, what=f"ana's balance {expected:.2f} s"
    )
    metrics = ana.get("/metrics").text
    assert 'labrun_budget_used_hours{pool="cpu",user="ana"}' in metrics
    assert 'labrun_budget_hours{pool="cpu",user="ana"}' in metrics


def test_over_budget_is_decided_at_each_pick_and_a_user_back_under_gets_their_class_back(tmp_path) -> None:
    from service_helpers import queued_record

    from app.budgets import Budgets, runs_as
    from app.core.config import Settings
    from app.models import RunStatus
    from app.store import RunStore
    from app.users import Users

    store = RunStore(tmp_path / "runs.db")
    users = Users(store)
    users.add("ana")
    run = store.insert(queued_record("a1", gpu_need=2, owner="ana"))
    now = time.time()
    store.mark_running(run.name, "h", [0, 1], started_at=now - 1800)
    store.finish(run.name, [RunStatus.RUNNING], RunStatus.SUCCEEDED, finished_at=now - 900)
    budgets = Budgets(Settings(output_dir=tmp_path, budget_gpu_hours=0.4), users, store)
    waiting = QueueEntry(2, "a2", "ana", 1, None, "high")
    over = budgets.over()
    assert over("ana", "gpu") is not None  # 2 GPUs x 15 min = 0.5 GPU-hours, over 0.4
    assert runs_as(waiting, over).priority == "low"
    assert budgets.balance("ana", "gpu").used_hours == pytest.approx(0.5, abs=1e-6)
    assert budgets.over()("ana", "cpu") is None  # CPU runs: no budget
    users.set_budgets("ana", gpu_hours=1.0)  # an admin raises her budget: her next pick is high again
    assert runs_as(waiting, budgets.over()) is waiting
    store.close()
