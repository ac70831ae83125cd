"""The Docker launcher against a real Engine and the real trainer image, with small commands standing in
for the trainer where that keeps a test fast: exit codes, cancel, out-of-memory kills, re-attach after a
restart, hardening as seen from inside a container, and an unreachable Engine."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from pathlib import Path

import pytest

from app.launchers.base import EngineUnavailable, LaunchError, LaunchSpec
from app.launchers.docker import LABEL_OUTPUT_DIR, DockerLauncher, DockerSettings, container_name

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]


def py(code: str) -> tuple[str, ...]:
    return ("python", "-c", code)


@pytest.fixture
def make(trainer_image, output_dir, engine):
    """``make(code, **settings)`` -> (launcher, spec): a launcher running ``python -c code`` in the image."""
    made: list[tuple[DockerLauncher, LaunchSpec]] = []

    def factory(code: str, gpus: tuple[int, ...] = (), **settings):
        settings.setdefault("image", trainer_image)
        settings.setdefault("memory", "1g")
        settings.setdefault("shm_size", "64m")
        launcher = DockerLauncher(DockerSettings(**settings), output_dir, command=py(code))
        name = f"test-{uuid.uuid4().hex[:10]}"
        state = output_dir / ".labrun" / "runs" / name
        run_dir = output_dir / "2026-01-01" / name
        spec = LaunchSpec(
            name, [], gpus, output_dir, state, state / "run.log", {"LABRUN_RUN": name}, run_dir=run_dir
        )
        made.append((launcher, spec))
        return launcher, spec

    yield factory
    for launcher, spec in made:  # never leave a container behind
        with contextlib.suppress(Exception):  # already released
            engine.containers.get(container_name(spec.name)).remove(force=True)
        launcher.close()


def wait_running(engine, handle: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while engine.containers.get(handle).status != "running":
        assert time.monotonic() < deadline, "container never started"
        time.sleep(0.1)


def test_success_logs_to_the_log_path_and_release_removes(make, engine):
    launcher, spec = make("print('hello from the run')")
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=60)
    assert outcome is not None
    assert outcome.succeeded
    assert outcome.exit_code == 0
    assert "hello from the run" in spec.log_path.read_text()
    # Kept until released: the outcome stays readable, again and again.
    assert launcher.poll(spec.name, handle) == outcome
    assert engine.containers.get(handle).labels["labrun.run"] == spec.name
    launcher.release(spec.name, handle)
    assert engine.containers.list(all=True, filters={"id": handle}) == []
    launcher.release(spec.name, handle)  # idempotent


def test_non_zero_exit(make):
    launcher, spec = make("import sys; print('about to fail', flush=True); sys.exit(3)")
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=60)
    assert outcome.exit_code == 3
    assert outcome.reason == "exited with code 3"
    assert "about to fail" in spec.log_path.read_text()
    launcher.release(spec.name, handle)


def started_until(make, engine, code: str, text: str):
    """(launcher, spec, handle) of a run of ``code``, running and past printing ``text``."""
    launcher, spec = make(code)
    handle = launcher.start(spec)
    wait_running(engine, handle)
    _wait_for_text(spec.log_path, text)
    return launcher, spec, handle


def test_cancel_stops_with_sigterm(make, engine):
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n print('got SIGTERM', flush=True); sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('running', flush=True)\ntime.sleep(600)\n"
    )
    launcher, spec, handle = started_until(make, engine, code, "running")
    started = time.monotonic()
    launcher.cancel(spec.name, handle, grace_s=10)
    assert time.monotonic() - started < 8  # it stopped on SIGTERM, well before the grace ran out
    outcome = launcher.poll(spec.name, handle)
    assert outcome.exit_code == 143
    assert "got SIGTERM" in spec.log_path.read_text()
    launcher.release(spec.name, handle)


def test_cancel_kills_after_the_grace_period(make, engine):
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('stubborn', flush=True)\ntime.sleep(600)\n"
    launcher, spec, handle = started_until(make, engine, code, "stubborn")
    started = time.monotonic()
    launcher.cancel(spec.name, handle, grace_s=2)
    took = time.monotonic() - started
    assert 1.5 < took < 15
    outcome = launcher.poll(spec.name, handle)
    assert outcome.exit_code == 137
    # the same words as for every engine's cancel that had to kill
    assert outcome.reason == (
        "killed by SIGKILL after the cancel's grace period (2 s): it did not stop on SIGTERM"
    )
    launcher.release(spec.name, handle)


def test_out_of_memory_kill(make):
    launcher, spec = make(
        "print('allocating', flush=True); block = b'x' * (512 << 20); print('survived')", memory="96m"
    )
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=120)
    assert outcome.reason == "killed: out of memory"
    assert outcome.exit_code == 137
    assert "survived" not in spec.log_path.read_text()
    launcher.release(spec.name, handle)


def test_a_helper_killed_for_memory_does_not_fail_a_run_that_exits_0(make):
    """The Engine sets OOMKilled when any process in the container was killed for memory: a run whose
    trainer carried on and exited 0 succeeded."""
    code = (
        "import subprocess, sys\n"
        "helper = subprocess.run([sys.executable, '-c', 'block = b\"x\" * (512 << 20)'])\n"
        "print('helper exited', helper.returncode, flush=True)\n"
    )
    launcher, spec = make(code, memory="96m")
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=120)
    assert "helper exited -9" in spec.log_path.read_text()
    assert outcome.succeeded
    assert outcome.exit_code == 0
    assert outcome.reason is None
    launcher.release(spec.name, handle)


def test_reattach_after_a_restart_and_outcome_of_a_run_that_ended_meanwhile(
    make, engine, trainer_image, output_dir
):
    launcher, spec = make("import time; print('long run', flush=True); time.sleep(4); raise SystemExit(5)")
    handle = launcher.start(spec)
    wait_running(engine, handle)
    # A new launcher (the service restarted and remembers nothing) finds the run by its name alone.
    restarted = DockerLauncher(DockerSettings(image=trainer_image), output_dir)
    assert restarted.reattach(spec.name) == handle
    assert restarted.poll(spec.name, handle) is None  # still running
    # Starting it again (a crash between start and record) finds the same container: it never runs twice.
    assert launcher.start(spec) == handle
    assert len(engine.containers.list(all=True, filters={"label": f"labrun.run={spec.name}"})) == 1
    # It ends while nobody watches; the exit code is still there afterwards.
    engine.containers.get(handle).wait(timeout=60)
    again = DockerLauncher(DockerSettings(image=trainer_image), output_dir)
    assert again.reattach(spec.name) == handle
    outcome = again.poll(spec.name, handle)
    assert outcome.exit_code == 5
    assert outcome.reason == "exited with code 5"
    again.release(spec.name, handle)
    assert again.reattach(spec.name) is None
    assert again.poll(spec.name, handle).reason.startswith("lost while the service was down")
    restarted.close()
    again.close()


def test_hardening_seen_from_inside(make, output_dir):
    code = r"""
import json, os, pathlib, resource
def caps():
    for line in open('/proc/self/status'):
        if line.startswith(('CapEff', 'CapBnd', 'NoNewPrivs')):
            yield line.split(':')[0], line.split()[1]
def writable(path):
    try:
        pathlib.Path(path, 'probe').write_text('x'); return True
    except OSError:
        return False
mounts = [line.split()[1] for line in open('/proc/self/mounts')]
shm = os.statvfs('/dev/shm')
print('REPORT ' + json.dumps({
    'uid': os.getuid(), 'gid': os.getgid(), **dict(caps()),
    'root_writable': writable('/'), 'opt_writable': writable('/opt/labrun'), 'tmp_writable': writable('/tmp'),
    'output_writable': writable(os.environ['OUTPUT_DIR_PROBE']),
    'run_dir_writable': writable(os.environ['LABRUN_RUN_DIR']),
    'net': sorted(os.listdir('/sys/class/net')), 'shm_bytes': shm.f_blocks * shm.f_frsize,
    'pids_max': open('/sys/fs/cgroup/pids/pids.max').read().strip() if os.path.exists('/sys/fs/cgroup/pids/pids.max') else open('/sys/fs/cgroup/pids.max').read().strip(),
    'env': sorted(os.environ), 'mounts': mounts,
}), flush=True)
"""
    launcher, spec = make(code, pids_limit=321, shm_size="256m")
    spec = LaunchSpec(
        spec.name,
        [],
        (),
        spec.output_dir,
        spec.state_dir,
        spec.log_path,
        {"OUTPUT_DIR_PROBE": str(output_dir)},
        run_dir=spec.run_dir,
    )
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=60)
    log = spec.log_path.read_text()
    assert outcome.succeeded, log
    report = json.loads(log.split("REPORT ", 1)[1].splitlines()[0])
    assert report["uid"] != 0
    assert report["gid"] != 0
    assert int(report["CapEff"], 16) == 0
    assert int(report["CapBnd"], 16) == 0
    assert report["NoNewPrivs"] == "1"
    assert not report["root_writable"]
    assert not report["opt_writable"]
    assert report["tmp_writable"]
    assert report["run_dir_writable"]
    # Of the outputs, only the run's own directory (tests/docker/test_docker_isolation.py).
    assert not report["output_writable"]
    assert report["net"] == ["lo"]  # network none: WandB is offline
    assert report["shm_bytes"] == 256 << 20
    assert report["pids_max"] == "321"
    assert "/var/run/docker.sock" not in report["mounts"]
    # The environment: the image's, the service's (OUTPUT_DIR_PROBE) and the launcher's; nothing else.
    assert set(report["env"]) <= {
        "PATH",
        "PWD",
        "HOSTNAME",
        "HOME",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "MPLCONFIGDIR",
        "NVIDIA_DRIVER_CAPABILITIES",
        "NVIDIA_VISIBLE_DEVICES",
        "LABRUN_CODE_VERSION",
        "LABRUN_LOG_PATH",
        "LABRUN_IMAGE_ID",
        "LABRUN_RUN_DIR",
        "WANDB_MODE",
        "OUTPUT_DIR_PROBE",
        "LC_CTYPE",
    }, report["env"]
    launcher.release(spec.name, handle)


def test_unreachable_engine(tmp_path, output_dir):
    launcher = DockerLauncher(DockerSettings(host=f"unix://{tmp_path}/no-such.sock"), output_dir)
    spec = LaunchSpec("x", [], (), output_dir, output_dir / "s", output_dir / "s" / "run.log")
    with pytest.raises(EngineUnavailable):
        launcher.start(spec)
    with pytest.raises(EngineUnavailable):
        launcher.reattach("x")
    ok, detail = launcher.health()
    assert not ok
    assert "docker engine down" in detail


def test_missing_image_is_a_launch_error(make):
    launcher, spec = make("print(1)", image="labrun-trainer:no-such-tag")
    with pytest.raises(LaunchError, match="not found"):
        launcher.start(spec)
    ok, detail = launcher.health()
    assert not ok
    assert "missing" in detail


def _wait_for_text(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.1)


def test_gpu_request_on_an_engine_without_nvidia_fails_cleanly(make, engine):
    """This machine has no NVIDIA runtime: the Engine refuses the device request, the run fails with the
    Engine's reason, and no container is left behind (it never ran)."""
    launcher, spec = make("print('never')", gpus=(0,))
    with pytest.raises(LaunchError, match="(?i)nvidia|device"):
        launcher.start(spec)
    assert engine.containers.list(all=True, filters={"label": f"labrun.run={spec.name}"}) == []


def start_up_after_recording_the_end_of(output_dir: Path, name: str, handle: str, image: str, monkeypatch):
    """One start-up (re-attach, release) of the service on ``output_dir``, whose store says that ``name``
    ran in container ``handle`` and ended: a service that died between recording and releasing left it."""
    from app.core.config import load_settings
    from app.main import build_manager
    from app.models import RunRecord, RunStatus
    from app.store import RunStore

    store = RunStore(output_dir / ".labrun" / "runs.db")
    store.insert(
        RunRecord(0, name, RunStatus.QUEUED, "neuraloperator", [], f"2026-01-01/{name}", 0, time.time())
    )
    assert store.mark_running(name, handle, [], launcher="docker")
    assert store.finish(name, [RunStatus.RUNNING], RunStatus.SUCCEEDED, 0)
    store.close()
    monkeypatch.setenv("LABRUN_DOCKER_IMAGE", image)
    manager = build_manager(load_settings(output_dir=output_dir, launcher="docker", gpus=""))
    try:
        manager.reconcile()
    finally:
        manager.store.close()


def test_a_container_whose_outcome_was_recorded_is_removed_at_the_next_start(
    make, engine, output_dir, trainer_image, monkeypatch
):
    """The service died after recording a run's end but before removing its container: the next start
    removes it. A container of a run the store does not know is left alone."""
    launcher, spec = make("print('done')")
    handle = launcher.start(spec)
    assert launcher.wait(spec.name, handle, timeout=60).succeeded
    other_launcher, other = make("print('not ours')")
    other_handle = other_launcher.start(other)
    assert other_launcher.wait(other.name, other_handle, timeout=60).succeeded
    assert {spec.name: handle, other.name: other_handle}.items() <= launcher.leftovers().items()

    start_up_after_recording_the_end_of(output_dir, spec.name, handle, trainer_image, monkeypatch)
    assert engine.containers.list(all=True, filters={"id": handle}) == []
    assert engine.containers.get(other_handle).labels["labrun.run"] == other.name


def test_another_services_containers_are_left_alone(
    make, engine, output_dir, tmp_path, trainer_image, monkeypatch
):
    """Two labrun services on one Engine (a test instance beside the lab's), each with its own output
    directory: neither lists, re-attaches or, at start-up, releases the other's containers, even for a run
    of the same name whose end its own store has recorded."""
    launcher, spec = make("print('the lab service run')")
    handle = launcher.start(spec)
    assert launcher.wait(spec.name, handle, timeout=60).succeeded
    other_dir = tmp_path / "other-outputs"
    other_dir.mkdir()
    other = DockerLauncher(DockerSettings(image=trainer_image), other_dir, command=py("print('other')"))

    assert launcher.leftovers().get(spec.name) == handle
    assert launcher.reattach(spec.name) == handle
    assert spec.name not in other.leftovers()
    assert other.reattach(spec.name) is None

    other.close()
    start_up_after_recording_the_end_of(other_dir, spec.name, handle, trainer_image, monkeypatch)
    assert engine.containers.get(handle).labels[LABEL_OUTPUT_DIR] == str(output_dir)


def test_a_log_past_its_bound_is_cut_by_the_writer_inside_the_container(make):
    """Issue 20: a Docker run's log is written from inside its container, bounded as every launcher's
    (trainer/logbound.py): head, a marker line, tail; ``.cut`` says where and how much, and the service's
    readers see the file as kept."""
    from app.runfiles import read_range, read_tail
    from trainer.logbound import read_cut

    code = "for i in range(1, 30001): print(f'container line {i}', flush=True)\nprint('done')"
    launcher, spec = make(code)
    spec = dataclasses.replace(spec, env={**spec.env, "LABRUN_MAX_LOG_BYTES": str(64 << 10)})
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=120)
    kept = spec.log_path.read_bytes()
    assert outcome is not None, kept[-2000:]
    assert outcome.succeeded, kept[-2000:]
    cut = read_cut(spec.log_path)
    assert cut is not None
    assert len(kept) <= 64 << 10
    output = b"".join(b"container line %d\n" % i for i in range(1, 30001)) + b"done\n"
    assert kept[: cut.head_end] == output[: cut.head_end]
    assert kept[cut.head_end : cut.tail_start].startswith(b"[labrun: %d bytes of output cut" % cut.cut_bytes)
    assert output.endswith(kept[cut.tail_start :])
    assert kept.endswith(b"container line 30000\ndone\n")
    assert cut.cut_bytes == len(output) - cut.head_end - (len(kept) - cut.tail_start)
    tail = read_tail(spec.log_path, 1)
    assert tail.text == "done\n"
    assert tail.end == len(kept)
    assert tail.cut_bytes == cut.cut_bytes
    assert read_range(spec.log_path, 0, len(kept)).data == kept
    launcher.release(spec.name, handle)


def test_a_signal_reaches_the_command_through_the_log_writer_and_a_signal_death_is_reported(make):
    code = "import os, signal, time\nprint('up', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\n"
    launcher, spec = make(code)
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=60)
    assert outcome is not None, outcome
    assert outcome.exit_code == 128 + 11, outcome
    assert "SIGSEGV" in outcome.reason, outcome
    assert "up" in spec.log_path.read_text()
    launcher.release(spec.name, handle)
