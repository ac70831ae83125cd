"""What the Docker launcher asks the Engine for (no Engine needed): the exact ``containers.create``
arguments for GPU and CPU runs, the hardening, the environment, and the settings' validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.launchers.base import LaunchError, LaunchSpec
from app.launchers.docker import (
    IMAGE_USER,
    LABEL_RUN,
    DockerLauncher,
    DockerSettings,
    container_name,
)
from app.statedir import StateDir
from trainer.logbound import cut_path

IMAGE_ID = "sha256:" + "ab" * 32


def make_spec(tmp_path: Path, gpus: tuple[int, ...] = (), env: dict[str, str] | None = None) -> LaunchSpec:
    out = tmp_path / "outputs"
    name = "2026-11-28_12-00-00_sfno32x64_max_epochs=1,seed=3"
    state = out / ".labrun" / "runs" / name
    return LaunchSpec(
        name=name,
        trainer_args=["max_epochs=1", f"run_name={name}", f"log_dir={out}"],
        gpus=gpus,
        output_dir=out,
        state_dir=state,
        log_path=state / "run.log",
        env=env if env is not None else {"LABRUN_RUN": name},
        run_dir=out / "2026-11-28" / name,
    )


def launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: object) -> DockerLauncher:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return DockerLauncher(DockerSettings(**settings), tmp_path / "outputs")


def test_gpu_run_requests_exactly_its_devices(tmp_path, monkeypatch):
    kw = launcher(tmp_path, monkeypatch).create_kwargs(make_spec(tmp_path, gpus=(1, 3)), IMAGE_ID)
    [request] = kw["device_requests"]
    assert request["Driver"] == "nvidia"
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Count"] == 0  # never "all" (-1)
    assert request["Capabilities"] == [["gpu"]]
    # The Engine tells the Container Toolkit which GPUs: nothing in the env may widen that.
    assert "NVIDIA_VISIBLE_DEVICES" not in kw["environment"]
    assert "CUDA_VISIBLE_DEVICES" not in kw["environment"]


def test_cpu_run_requests_no_device_and_hides_gpus(tmp_path, monkeypatch):
    kw = launcher(tmp_path, monkeypatch).create_kwargs(make_spec(tmp_path), IMAGE_ID)
    assert kw["device_requests"] == []
    assert kw["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_hardening(tmp_path, monkeypatch):
    lc = launcher(tmp_path, monkeypatch, memory="4g", pids_limit=512, shm_size="2g")
    spec = make_spec(tmp_path)
    kw = lc.create_kwargs(spec, IMAGE_ID)
    assert kw["image"] == IMAGE_ID  # the exact image, not a tag that a rebuild could move
    assert kw["user"] not in (None, "", "root")
    assert not kw["user"].startswith("0:")
    assert kw["security_opt"] == ["no-new-privileges:true"]
    assert kw["cap_drop"] == ["ALL"]
    assert "cap_add" not in kw
    assert "privileged" not in kw
    assert kw["read_only"] is True
    assert list(kw["tmpfs"]) == ["/tmp"]
    assert kw["pids_limit"] == 512
    assert kw["mem_limit"] == "4g"
    assert kw["memswap_limit"] == "4g"
    assert kw["shm_size"] == "2g"
    assert kw["network_mode"] == "none"
    assert kw["init"] is True
    assert kw["restart_policy"] == {"Name": "no"}
    assert "auto_remove" not in kw  # removed only by release(), after the outcome is recorded
    # Of the outputs directory, only the run's own directory, its log and the file the log's writer notes
    # its cuts in (read-write) and the data cache (read-only), each at the same path as on the host.
    cut = cut_path(spec.log_path)
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in kw["mounts"]] == [
        (str(spec.run_dir), str(spec.run_dir), False),
        (str(spec.log_path), str(spec.log_path), False),
        (str(cut), str(cut), False),
        (str(spec.output_dir / ".data_cache"), str(spec.output_dir / ".data_cache"), True),
    ]
    assert all(m["Type"] == "bind" for m in kw["mounts"])
    assert "volumes" not in kw
    assert "privileged" not in kw


def test_user_is_the_services_own_or_the_images(tmp_path, monkeypatch):
    lc = launcher(tmp_path, monkeypatch)
    expected = IMAGE_USER if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}"
    assert lc.create_kwargs(make_spec(tmp_path), IMAGE_ID)["user"] == expected
    assert launcher(tmp_path, monkeypatch, user="1234:1234").user == "1234:1234"


def test_name_labels_and_command(tmp_path, monkeypatch):
    spec = make_spec(tmp_path)
    kw = launcher(tmp_path, monkeypatch).create_kwargs(spec, IMAGE_ID)
    assert kw["name"] == container_name(spec.name)
    assert kw["labels"][LABEL_RUN] == spec.name
    assert kw["command"] == ["python", "-m", "trainer", *spec.trainer_args]
    assert kw["entrypoint"][:2] == ["/bin/sh", "-c"]
    assert "python -m trainer.logbound --" in kw["entrypoint"][2]  # the bounded log writer (issue 20)
    assert kw["environment"]["LABRUN_LOG_PATH"] == str(spec.log_path)
    assert kw["environment"]["LABRUN_IMAGE_ID"] == IMAGE_ID


def test_container_names_are_valid_and_distinct():
    import re

    names = ["2026-11-28_12-00-00_fno32x64_a=1,b=2", "2026-11-28_12-00-00_fno32x64_a-1-b-2", "x" * 255]
    made = {container_name(n) for n in names}
    assert len(made) == len(names)
    for made_name in made:
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+", made_name)
        assert len(made_name) < 128
    assert container_name(names[0]) == container_name(names[0])


def test_environment_is_only_what_the_service_sets(tmp_path, monkeypatch):
    env = {"LABRUN_RUN": "x", "PATH": "/host/bin", "CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": "/host"}
    monkeypatch.setenv("SOME_SERVICE_SECRET", "nope")
    kw = launcher(tmp_path, monkeypatch).create_kwargs(make_spec(tmp_path, env=env), IMAGE_ID)
    environment = kw["environment"]
    assert environment["LABRUN_RUN"] == "x"
    for leaked in ("PATH", "CUDA_VISIBLE_DEVICES", "PYTHONPATH", "SOME_SERVICE_SECRET", "WANDB_API_KEY"):
        assert leaked not in environment
    assert environment["WANDB_MODE"] == "offline"


def test_network_only_when_wandb_is_online(tmp_path, monkeypatch):
    lc = launcher(tmp_path, monkeypatch)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    kw = lc.create_kwargs(make_spec(tmp_path), IMAGE_ID)
    assert kw["network_mode"] == "bridge"
    assert kw["environment"]["WANDB_API_KEY"] == "k" * 40
    assert "WANDB_MODE" not in kw["environment"]
    forced = launcher(tmp_path, monkeypatch, network="none")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    kw = forced.create_kwargs(make_spec(tmp_path), IMAGE_ID)
    assert kw["network_mode"] == "none"
    assert "WANDB_API_KEY" not in kw["environment"]


def test_data_cache_mount(tmp_path, monkeypatch):
    spec = make_spec(tmp_path)
    kw = launcher(tmp_path, monkeypatch, data_cache=str(tmp_path / "cache")).create_kwargs(spec, IMAGE_ID)
    [cache] = [m for m in kw["mounts"] if m["Target"] == str(spec.output_dir / ".data_cache")]
    assert cache["Source"] == str(tmp_path / "cache")
    assert cache["ReadOnly"] is True


def test_the_run_is_told_its_directory(tmp_path, monkeypatch):
    """The trainer takes the directory made (and mounted) for it while it is empty: LABRUN_RUN_DIR."""
    spec = make_spec(tmp_path)
    kw = launcher(tmp_path, monkeypatch).create_kwargs(spec, IMAGE_ID)
    assert kw["environment"]["LABRUN_RUN_DIR"] == str(spec.run_dir)


def test_a_run_without_its_own_directory_is_not_started(tmp_path, monkeypatch):
    """A spec that names no run directory, or one that is not a run's (the output directory itself, the
    service's state, the data cache, a place outside), would show the run more than its own."""
    lc = launcher(tmp_path, monkeypatch)
    spec = make_spec(tmp_path)
    out = spec.output_dir
    for run_dir in (
        None,
        out,
        out / ".labrun",
        out / ".labrun" / "runs" / "x",
        out / ".data_cache" / "x",
        tmp_path,
    ):
        bad = LaunchSpec(spec.name, [], (), out, spec.state_dir, spec.log_path, spec.env, run_dir=run_dir)
        with pytest.raises(LaunchError, match="run directory"):
            lc.create_kwargs(bad, IMAGE_ID)


@pytest.mark.parametrize(
    "env",
    [
        {"LABRUN_DOCKER_MEMORY": "lots"},
        {"LABRUN_DOCKER_SHM_SIZE": "-1"},
        {"LABRUN_DOCKER_PIDS_LIMIT": "3"},
        {"LABRUN_DOCKER_USER": "0:0"},
        {"LABRUN_DOCKER_USER": "labrun"},
        {"LABRUN_DOCKER_DATA_CACHE": "relative/dir"},
    ],
)
def test_bad_settings_fail_at_start_up(monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        DockerSettings()


def test_bad_settings_stop_the_service_with_the_variable_named(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("LABRUN_")}
    env.update(
        LABRUN_LAUNCHER="docker", LABRUN_OUTPUT_DIR=str(tmp_path), LABRUN_GPUS="", LABRUN_DOCKER_MEMORY="lots"
    )
    done = subprocess.run(
        [sys.executable, "-m", "app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode != 0
    assert "LABRUN_DOCKER_MEMORY" in done.stderr
    assert "512m or 8g" in done.stderr


def test_from_env_reads_labrun_docker_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("LABRUN_DOCKER_IMAGE", "labrun-trainer:abc")
    monkeypatch.setenv("LABRUN_DOCKER_MEMORY", "12G")

    class ServiceSettings:
        output_dir = tmp_path

    lc = DockerLauncher.from_settings(ServiceSettings(), StateDir(ServiceSettings().output_dir))
    assert lc.settings.image == "labrun-trainer:abc"
    assert lc.settings.memory == "12g"
    assert lc.output_dir == tmp_path


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_wandb_mode_of_the_service_keeps_runs_offline_and_off_the_network(tmp_path, monkeypatch, mode):
    """The service's WANDB_MODE wins over its key, as it does for local runs (they inherit the service's
    environment): no key, no network for the container."""
    lc = launcher(tmp_path, monkeypatch)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", mode)
    kw = lc.create_kwargs(make_spec(tmp_path), IMAGE_ID)
    assert kw["network_mode"] == "none"
    assert "WANDB_API_KEY" not in kw["environment"]
    assert kw["environment"]["WANDB_MODE"] == mode


def test_out_of_memory_flag_does_not_fail_a_run_that_exited_0(tmp_path, monkeypatch):
    """The Engine flags a container OOM when any process in it was killed for memory (a helper such as
    wandb's service process, say) even if the trainer carried on and succeeded."""
    from docker.models.containers import Container

    from app.launchers.docker import _exit_status

    lc = launcher(tmp_path, monkeypatch)

    def outcome(code: int, oom: bool):
        container = Container(attrs={"State": {"Status": "exited", "ExitCode": code, "OOMKilled": oom}})
        status = _exit_status(container)
        assert status is not None
        return lc.outcome("r1", status[0], oom=status[1], shell=True)

    assert outcome(0, True).succeeded
    assert outcome(137, True).reason == "killed: out of memory"
    # a DataLoader worker killed for memory fails the run
    assert outcome(1, True).reason == "killed: out of memory"
    assert outcome(137, False).reason == "killed by SIGKILL (signal 9, exit code 137)"  # not by labrun
    assert _exit_status(Container(attrs={"State": {"Status": "running"}})) is None


def test_a_run_started_from_another_sees_that_checkpoint_alone_read_only(tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    ckpt = out / "2026-11-27" / "source" / "ckpt" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    spec = make_spec(tmp_path, env={"LABRUN_INIT_FROM_CKPT": str(ckpt)})
    kw = launcher(tmp_path, monkeypatch).create_kwargs(spec, IMAGE_ID)
    [mount] = [m for m in kw["mounts"] if m["Source"] == str(ckpt)]
    assert (mount["Target"], mount["ReadOnly"]) == (str(ckpt), True)
    assert not [m for m in kw["mounts"] if m["Source"] == str(ckpt.parent.parent)]  # not its directory
    assert kw["environment"]["LABRUN_INIT_FROM_CKPT"] == str(ckpt)
    link = ckpt.with_name("link.ckpt")
    link.symlink_to(out / ".labrun" / "runs.db")
    for path in (link, tmp_path / "elsewhere.ckpt", out / ".labrun" / "runs.db"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.write_bytes(b"x")
        refused = make_spec(tmp_path, env={"LABRUN_INIT_FROM_CKPT": str(path)})
        with pytest.raises(LaunchError, match="is not a checkpoint of a run inside"):
            launcher(tmp_path, monkeypatch).create_kwargs(refused, IMAGE_ID)
