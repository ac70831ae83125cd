"""How docker/build-test-image.sh finds a base image, on the real Engine: a machine with debootstrap makes
one (today's path, cached), one without it pulls the public Python image, and one that can do neither gets
one line saying what to install, which the tests report as their one reason (a skip; a failure in CI).

debootstrap and `docker pull` are stood in for by small scripts on PATH (no registry is reachable here and a
real debootstrap takes a minute); everything else is the real script against the real Engine."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from docker_helpers import BUILD_SCRIPT, MISSING, build_test_image

pytestmark = [pytest.mark.docker]

HOST_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
DEBOOTSTRAP_BASE = HOST_PY == "3.11"  # a bookworm base has Python 3.11: the script uses it for 3.11 only


def _script(path: Path, text: str) -> None:
    path.write_text("#!/usr/bin/env bash\nset -eu\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def machine(tmp_path, engine):
    """A PATH without debootstrap, base image names no other test uses, and a ``docker`` whose ``pull``
    fails as without a registry (or, with ``pull_works``, "pulls" by tagging a tiny local image)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real_docker = shutil.which("docker")
    probe = uuid.uuid4().hex[:10]
    made, pulled, tiny = (f"labrun-probe-{kind}:{probe}" for kind in ("made", "pulled", "tiny"))
    subprocess.run(
        f"tar -c -T /dev/null | docker import - {tiny}", shell=True, check=True, capture_output=True
    )
    _script(
        bin_dir / "docker",
        f'if [ "${{1:-}}" = pull ]; then\n'
        f'  echo "pull $2" >>"{tmp_path}/pulls"\n'
        f'  if [ -e "{tmp_path}/pull_works" ]; then exec "{real_docker}" tag {tiny} "$2"; fi\n'
        f'  echo "Error response from daemon: no registry reachable (stand-in)" >&2; exit 1\n'
        f"fi\n"
        f'exec "{real_docker}" "$@"\n',
    )
    path = [str(bin_dir)] + [
        d for d in os.environ["PATH"].split(os.pathsep) if d and not (Path(d) / "debootstrap").exists()
    ]
    env = {
        **os.environ,
        "PATH": os.pathsep.join(path),
        "PYTHON": sys.executable,
        "LABRUN_BUILD_CACHE": str(tmp_path / "cache"),
        "LABRUN_TEST_BASE": made,
        "LABRUN_TEST_BASE_PULL": pulled,
    }
    box = type("Machine", (), {})()
    box.env, box.bin, box.made, box.pulled, box.dir = env, bin_dir, made, pulled, tmp_path
    box.pulls = lambda: (tmp_path / "pulls").read_text().splitlines() if (tmp_path / "pulls").exists() else []
    yield box
    for image in (made, pulled, tiny):
        with contextlib.suppress(Exception):
            engine.images.remove(image, force=True)


def base(machine) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(BUILD_SCRIPT), "base"], env=machine.env, capture_output=True, text=True, timeout=300
    )


def test_neither_debootstrap_nor_pull_says_what_to_install_in_one_line(machine, monkeypatch):
    done = base(machine)
    assert done.returncode == MISSING, done.stdout + done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "cannot make the test base image: install debootstrap (apt-get install debootstrap"
    )
    assert f"or allow pulling {machine.pulled}" in line
    assert "no registry reachable (stand-in)" in line
    assert machine.pulls() == [f"pull {machine.pulled}"]

    # What the tests make of it: one reason, a skip outside CI and a failure in CI.
    for ci, outcome in (("", pytest.skip.Exception), ("true", pytest.fail.Exception)):
        monkeypatch.setenv("CI", ci)
        with pytest.raises(outcome) as raised:
            build_test_image("trainer", machine.dir / "build.log", env=machine.env)
        assert line in str(raised.value)
        assert "\n" not in str(raised.value)


def test_without_debootstrap_the_public_python_image_is_pulled_once(machine):
    (machine.dir / "pull_works").touch()
    first = base(machine)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip().splitlines()[-1] == machine.pulled
    again = base(machine)  # found on this machine: not pulled again
    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1] == machine.pulled
    assert machine.pulls() == [f"pull {machine.pulled}"]


@pytest.mark.skipif(
    not DEBOOTSTRAP_BASE, reason=f"the debootstrapped base is for a Python 3.11 host, not {HOST_PY}"
)
def test_with_debootstrap_the_base_is_made_once_and_nothing_is_pulled(machine, engine):
    calls = machine.dir / "debootstrap-calls"
    _script(  # a stand-in that makes a root file system of one file, saying how it was called
        machine.bin / "debootstrap",
        f'echo "$*" >>"{calls}"\nmkdir -p "${{@: -1}}/etc"\necho made >"${{@: -1}}/etc/probe"\n',
    )
    first = base(machine)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.strip().splitlines()[-1] == machine.made
    assert calls.read_text().splitlines() == [
        f"--variant=minbase --include=python3,python3-venv bookworm {machine.dir / 'cache' / 'rootfs'}"
    ]
    assert engine.images.get(machine.made).attrs["Config"]["Cmd"] == ["/bin/bash"]
    again = base(machine)  # cached: not made again
    assert again.returncode == 0
    assert again.stdout.strip().splitlines()[-1] == machine.made
    assert len(calls.read_text().splitlines()) == 1
    assert machine.pulls() == []
