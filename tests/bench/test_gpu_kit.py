"""The GPU kit's wheel set resolves for the GPU machine, offline: every requirement of every wheel in the kit
(markers and extras evaluated for its CPython 3.12 on x86-64 Linux) is in the kit, at a matching version, or
on that machine's list; the kit and the checkout stay under 64 MiB, so that they are quick to copy. Checked on the
committed lock (the wheels' real metadata, written by `make gpu-kit`) and, when the kit folder is there,
on the wheels themselves. The one wheel built from source is locked like the others: its source's sha256
is in the lock and, where the package index answers, it is built twice and gives the lock's bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import gpu_kit
from bench.gpu_kit import ALSO_CARRY, GPU_MACHINE, ROOTS, Wheel, check_closure, read_lock


@pytest.fixture(scope="module")
def lock() -> list[Wheel]:
    return read_lock()


def names(wheels: list[Wheel]) -> set[str]:
    return {w.name for w in wheels}


def test_lock_resolves_on_the_gpu_machine(lock):
    closure = check_closure(lock)
    assert closure.ok, "\n".join(map(str, closure.problems))
    assert gpu_kit.tag_problems(lock) == []
    # What the kit leans on is really there (the machine's list), and torch is never in the kit.
    assert {"torch", "numpy", "pyyaml", "requests"} <= set(closure.from_machine)
    assert "torch" not in names(lock)
    assert not any(n.startswith("nvidia-") for n in names(lock))


def test_lock_is_the_pinned_set(lock):
    assert gpu_kit.lock_pin_problems(lock) == []  # constraints.txt / PINS changed: rerun `make gpu-kit`
    versions = {w.name: w.version for w in lock}
    assert set(ROOTS) <= set(versions)
    assert versions["torch-harmonics"] == "0.9.2"  # the release built for the GPU machine's torch 2.11
    assert versions["hydra-core"] == "1.3.8"
    assert versions["wandb"] == "0.31.0"
    assert versions["neuraloperator"] == "2.0.0"
    assert versions["omegaconf"].startswith("2.3.")
    # Nothing the machine already has, except what ALSO_CARRY names (and says why).
    assert names(lock) & set(GPU_MACHINE) == set(ALSO_CARRY)


def test_kit_and_checkout_stay_small(lock):
    kit, tree, problems = gpu_kit.size_report(lock)
    assert problems == []
    assert kit == sum(w.size for w in lock)
    assert kit + tree <= gpu_kit.LIMIT_BYTES


@pytest.mark.parametrize(
    "missing", ["pydantic-core", "antlr4-python3-runtime", "opentelemetry-proto", "omegaconf", "sniffio"]
)
def test_a_missing_dependency_fails_the_check(lock, missing):
    closure = check_closure([w for w in lock if w.name != missing])
    assert not closure.ok
    assert any(missing in p.requirement.lower().replace("_", "-") for p in closure.problems), closure.problems


def test_a_machine_version_that_does_not_fit_fails_the_check(lock):
    # torch-harmonics 0.9.2 is built for torch 2.11: a machine with torch 2.14 must not pass.
    closure = check_closure(lock, machine={**GPU_MACHINE, "torch": "2.14.1"})
    assert [p.wheel.split("-")[0] for p in closure.problems] == ["torch_harmonics"]


def test_extras_asked_by_a_wheel_in_the_kit_are_followed(lock):
    # opentelemetry-exporter-otlp-proto-http needs opentelemetry-exporter-http-transport[requests], whose
    # `requests; extra == 'requests'` is then needed too.
    machine = {k: v for k, v in GPU_MACHINE.items() if k != "requests"}
    problems = check_closure(lock, machine=machine).problems
    assert any(p.wheel.startswith("opentelemetry_exporter_http_transport") for p in problems), problems


def test_markers_are_those_of_python_3_12_on_linux():
    wheel = Wheel(
        name="x",
        version="1",
        file="x-1-py3-none-any.whl",
        size=1,
        sha256="",
        requires_dist=[
            'importlib-resources; python_version < "3.9"',
            'pywin32; sys_platform == "win32"',
            'sphinx; extra == "doc"',
            'not-there; python_version >= "3.12" and platform_machine == "x86_64"',
        ],
    )
    problems = check_closure([wheel], roots=("x",)).problems
    assert [p.requirement for p in problems] == [wheel.requires_dist[3]]


def test_two_versions_of_one_package_fail_the_check(lock):
    hydra = next(w for w in lock if w.name == "hydra-core")
    other = dataclasses.replace(hydra, version="1.3.7", file="hydra_core-1.3.7-py3-none-any.whl")
    assert any("two wheels" in p.why for p in check_closure([*lock, other]).problems)


def test_a_wheel_for_another_python_is_refused(lock):
    core = next(w for w in lock if w.name == "pydantic-core")
    cp311 = dataclasses.replace(core, file=core.file.replace("cp312-cp312", "cp311-cp311"))
    assert gpu_kit.tag_problems([cp311]) != []


def test_the_kit_folder_matches_the_lock(lock):
    if not any(gpu_kit.KIT_DIR.glob("*.whl")):
        pytest.skip("no kit here (make gpu-kit): the lock's check above stands for it")
    wheels = gpu_kit.kit_wheels()
    assert gpu_kit.compare_to_lock(wheels, lock) == []
    assert check_closure(wheels).ok
    assert gpu_kit.pip_dry_run(gpu_kit.KIT_DIR) == []  # pip takes these files for CPython 3.12 x86-64


# ---------------------------------------------------------------------------- the one wheel built here


def built(lock: list[Wheel]) -> Wheel:
    (wheel,) = [w for w in lock if w.built_from_sdist]
    return wheel


def test_the_built_wheel_is_locked_with_its_source_and_backend(lock):
    antlr = built(lock)
    assert antlr.name in gpu_kit.SDIST_ONLY
    assert antlr.sdist == f"antlr4-python3-runtime-{antlr.version}.tar.gz"
    assert len(antlr.sdist_sha256 or "") == 64
    assert antlr.built_with == list(gpu_kit.BUILD_BACKEND)
    assert gpu_kit.lock_source_problems(lock) == []
    stale = dataclasses.replace(antlr, built_with=["setuptools==80.9.0", "wheel==0.45.1"])
    assert gpu_kit.lock_source_problems([stale]) != []  # BUILD_BACKEND changed: the lock must be rebuilt


def test_the_kit_check_compares_the_built_wheels_bytes_too(lock):
    other = dataclasses.replace(built(lock), sha256="0" * 64)
    problems = gpu_kit.compare_to_lock([*(w for w in lock if not w.built_from_sdist), other], lock)
    assert problems == [f"{other.file}: other bytes than the lock's (sha256)"]


def test_a_new_download_may_not_change_the_bytes_of_a_locked_file(lock):
    antlr, hydra = built(lock), next(w for w in lock if w.name == "hydra-core")
    assert gpu_kit.lock_drift(lock, lock) == []
    changed = {
        "index": dataclasses.replace(hydra, sha256="0" * 64),
        "source": dataclasses.replace(antlr, sha256="0" * 64, sdist_sha256="1" * 64),
        "build": dataclasses.replace(antlr, sha256="0" * 64),  # same source, same backend, other bytes
    }
    for what, wheel in changed.items():
        assert len(gpu_kit.lock_drift([wheel], lock)) == 1, what
    new_backend = dataclasses.replace(antlr, sha256="0" * 64, built_with=["setuptools==99.0.0"])
    assert gpu_kit.lock_drift([new_backend], lock) == []  # a new backend may build other bytes, once


OFFLINE = (
    "NewConnectionError",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ConnectTimeout",
    "Max retries exceeded",
)


@pytest.fixture(scope="module")
def sdist(lock, tmp_path_factory) -> Path:
    """The built wheel's source from the package index this machine uses (skipped where none answers)."""
    antlr = built(lock)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PIP_RETRIES", "1")  # offline, fail in seconds, not after pip's default retries
        env.setenv("PIP_TIMEOUT", "20")
        try:
            return gpu_kit.download_sdist(antlr.name, antlr.version, tmp_path_factory.mktemp("sdist"))
        except SystemExit as exc:
            if any(sign in str(exc) for sign in OFFLINE):
                pytest.skip(f"no package index answers here: {str(exc)[-300:]}")
            raise


def test_the_source_only_wheel_builds_the_same_bytes_twice(lock, sdist, tmp_path):
    antlr = built(lock)
    assert gpu_kit.file_sha256(sdist) == antlr.sdist_sha256  # the source is the locked one
    wheels = []
    for build in ("first", "second"):  # each from scratch: pip's cache of built wheels is off
        (tmp_path / build).mkdir()
        wheels.append(gpu_kit.build_wheel(sdist, tmp_path / build))
    assert [w.sha256 for w in wheels] == [antlr.sha256, antlr.sha256]
    assert wheels[0] == antlr  # every field the lock holds, the source and the backend too
