"""What a Docker run can reach of the output directory, seen from inside a real container: its own run
directory and its log (read-write), the data cache (read-only), and nothing else: not the store, not
another run's directory or log, not even their names."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import pytest

from app.launchers.base import LaunchSpec
from app.launchers.docker import DockerLauncher, DockerSettings, container_name
from app.statedir import StateDir
from trainer.logbound import cut_path

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

# Run as the run's own code: tries what a hostile run would, and reports what it could do and see.
PROBE = r"""
import json, os
e = os.environ
def attempt(action):
    try:
        return ['ok', action()]
    except OSError as exc:
        return ['denied', type(exc).__name__]
def read(path):
    with open(path, 'rb') as f:
        return f.read().decode(errors='replace')
def write(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write('planted')
    return 'written'
def listing(root):
    found = []
    for parent, dirs, files in os.walk(root):
        found += [os.path.join(parent, entry) for entry in dirs + files]
    return sorted(found)
report = {
    'store': attempt(lambda: read(e['PROBE_STORE'])),
    'other_file': attempt(lambda: read(e['PROBE_OTHER_FILE'])),
    'other_log': attempt(lambda: read(e['PROBE_OTHER_LOG'])),
    'other_write': attempt(lambda: write(os.path.join(e['PROBE_OTHER_DIR'], 'planted.txt'))),
    'new_dir_write': attempt(lambda: write(os.path.join(e['PROBE_OUT'], 'elsewhere', 'planted.txt'))),
    'cache_read': attempt(lambda: read(e['PROBE_CACHE_FILE'])),
    'cache_write': attempt(lambda: write(os.path.join(os.path.dirname(e['PROBE_CACHE_FILE']), 'x.pt'))),
    'own_write': attempt(lambda: write(os.path.join(e['PROBE_OWN'], 'ckpt', 'own.txt'))),
    'listing': listing(e['PROBE_OUT']),
}
print('REPORT ' + json.dumps(report), flush=True)
"""


@pytest.fixture
def isolated(trainer_image, output_dir, engine):
    """(launcher, spec, paths): a run of PROBE in an output directory that holds a store, another run's
    directory and log, and a data cache file, each with a secret the probe must not read."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    state = StateDir(output_dir)
    other = "2026-01-01_00-00-00_someone_elses"
    paths = {
        "PROBE_OUT": output_dir,
        "PROBE_STORE": state.db,
        "PROBE_OTHER_DIR": output_dir / "2026-01-01" / other,
        "PROBE_OTHER_FILE": output_dir / "2026-01-01" / other / "ckpt" / "last.ckpt",
        "PROBE_OTHER_LOG": state.log(other),
        "PROBE_CACHE_FILE": output_dir / ".data_cache" / "swe_32x64_cached.pt",
        "PROBE_OWN": output_dir / "2026-01-01" / name,
    }
    for key in ("PROBE_STORE", "PROBE_OTHER_FILE", "PROBE_OTHER_LOG", "PROBE_CACHE_FILE"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_text(f"secret of {key}")
        paths[key].chmod(0o644)  # readable by any uid: only the mounts keep a run out
    settings = DockerSettings(image=trainer_image, memory="1g", shm_size="64m")
    launcher = DockerLauncher(settings, output_dir, command=("python", "-c", PROBE))
    if os.geteuid() == 0:  # the other run's directory is its user's, as every run's (the same uid)
        uid, gid = (int(part) for part in launcher.user.split(":"))
        for path in (paths["PROBE_OTHER_DIR"], paths["PROBE_OTHER_FILE"].parent):
            os.chown(path, uid, gid)
    spec = LaunchSpec(
        name,
        [],
        (),
        output_dir,
        state.run(name),
        state.log(name),
        {key: str(path) for key, path in paths.items()},
        run_dir=paths["PROBE_OWN"],
    )
    yield launcher, spec, paths
    with contextlib.suppress(Exception):  # already released
        engine.containers.get(container_name(spec.name)).remove(force=True)
    launcher.close()


def test_a_run_reaches_only_its_own_directory_its_log_and_the_data_cache(isolated):
    launcher, spec, paths = isolated
    handle = launcher.start(spec)
    outcome = launcher.wait(spec.name, handle, timeout=120)
    log = spec.log_path.read_text()
    assert outcome is not None, log
    assert outcome.succeeded, log
    launcher.release(spec.name, handle)
    report = json.loads(log.split("REPORT ", 1)[1].splitlines()[0])

    # Nothing but its own: the store, another run's files and log, the cache (for writing), anywhere new.
    for what in ("store", "other_file", "other_log", "other_write", "new_dir_write", "cache_write"):
        assert report[what][0] == "denied", (what, report[what])
    assert not (paths["PROBE_OTHER_DIR"] / "planted.txt").exists()
    assert not (paths["PROBE_OUT"] / "elsewhere").exists()
    assert sorted(p.name for p in paths["PROBE_CACHE_FILE"].parent.iterdir()) == ["swe_32x64_cached.pt"]

    # What is its own works too: its directory (at the same path as on the host), its log (the report is
    # in it), and reading the data cache.
    assert report["own_write"] == ["ok", "written"]
    assert (paths["PROBE_OWN"] / "ckpt" / "own.txt").read_text() == "planted"
    assert report["cache_read"] == ["ok", "secret of PROBE_CACHE_FILE"]

    # Not even the names of what is not its own: everything the run lists under the output directory
    # leads to its own directory, its log (and the file its writer notes cuts in) or the data cache.
    own = [paths["PROBE_OWN"], spec.log_path, cut_path(spec.log_path), paths["PROBE_CACHE_FILE"].parent]
    for path in map(Path, report["listing"]):
        assert any(path == p or path in p.parents or p in path.parents for p in own), (
            path,
            report["listing"],
        )
    listed = "\n".join(report["listing"])
    for secret in ("runs.db", "someone_elses"):
        assert secret not in listed
