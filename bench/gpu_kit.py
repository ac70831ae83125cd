"""The GPU proof kit's wheels: what the GPU machine lacks to run the trainer, for CPython 3.12 on x86-64 Linux.

    python bench/gpu_kit.py download [--dest DIR]   # `make gpu-kit`: fetch, check, write the lock
    python bench/gpu_kit.py check [--dest DIR]      # offline: the lock (and DIR's wheels, if any) resolve

The GPU machine is a CUDA machine without internet access that has Python 3.12, torch 2.11 (CUDA 13),
lightning 2.6.6 and a large set of other packages (:data:`GPU_MACHINE`); the kit and the checkout are
copied to it together and stay under 64 MiB (:data:`LIMIT_BYTES`), so that the copy is quick.
``download`` starts from :data:`ROOTS`, follows every ``Requires-Dist`` (markers evaluated for the GPU
machine's Python) that the machine does not have, fetches each wheel alone (``pip download
--no-deps``, pinned by constraints.txt or :data:`PINS`; never torch; the one package published as source
only is built here, reproducibly: :data:`SDIST_ONLY`), and writes what the kit holds, with the wheels' own
requirements and sha256 (and a built wheel's source sha256), into ``bench/gpu_kit.lock.json``; a later
download that finds other bytes for a file the lock names fails instead of rewriting it. ``check`` proves
from that lock alone, without the network, that every requirement of every wheel in the kit is met by a
wheel in the kit or by the GPU machine, versions included where the machine's are documented.
bench/gpu_proof.py repeats that check on the GPU machine against what is really installed there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging import tags
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
KIT_DIR = ROOT / "bench" / "gpu-kit"  # ignored (.gitignore); copied to the GPU machine with the checkout
LOCK = ROOT / "bench" / "gpu_kit.lock.json"
CONSTRAINTS = ROOT / "constraints.txt"
LIMIT_BYTES = 64 * 2**20  # the checkout plus the kit, as copied to the GPU machine: kept small

# What the trainer imports that the GPU machine lacks (its own imports: trainer/*.py), and what the service
# needs for the GPU guard phase (bench/gpu_guard_proof.py starts python -m app; the machine has
# prometheus-client and nvidia-ml-py).
ROOTS = (
    "hydra-core",
    "omegaconf",
    "wandb",
    "neuraloperator",
    "torch-harmonics",
    "fastapi",
    "uvicorn",
    "httptools",
    "pydantic-settings",
)
# Versions that differ from constraints.txt (the project's pins, for its torch 2.14 venv).
PINS = {
    # torch-harmonics is a compiled wheel built against one torch minor: 0.9.3 needs torch 2.14, and the
    # release built for the GPU machine's torch 2.11 is 0.9.2 (its metadata says torch>=2.11,<2.12).
    "torch-harmonics": "0.9.2",
}
# In the kit although the GPU machine has a copy: the kit's wheels need a floor above what an undocumented
# version may meet, and each is small. (pydantic 2.14 needs typing-extensions>=4.16.0; googleapis-common-
# protos 1.76 needs protobuf>=6.33.5.)
ALSO_CARRY = ("typing-extensions", "protobuf")

# The GPU machine's Python packages: the package list of its environment (read on 2026-11-17;
# versions where that list gives one, else None). The kit holds none of these unless ALSO_CARRY names
# it. Keep this the only copy of the list.
GPU_MACHINE_PYTHON = "3.12.3"
GPU_MACHINE: dict[str, str | None] = {
    name: None
    for name in """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
    cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
    execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet
    httpcore httpx humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
    jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
    numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
    nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
    nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx
    onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
    propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
    scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
    simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server
    tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq
    torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer typing-extensions
    typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
    """.split()  # noqa: SIM905 - the machine's list, kept as it reads there
} | {
    "torch": "2.11.0",
    "lightning": "2.6.6",
    "pytorch-lightning": "2.6.6",
    "numpy": "2.5.2",
    "torchmetrics": "1.9.0",
    "triton": "3.6.0",
    "safetensors": "0.8.0",
}

# pip's options for the GPU machine's interpreter. pip matches a manylinux_2_N tag only when N is named.
PIP_TARGET = [
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--abi",
    "cp312",
    *[arg for n in range(39, 16, -1) for arg in ("--platform", f"manylinux_2_{n}_x86_64")],
    *("--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"),
]
# Packages published as source only: built into a (pure-Python) wheel here. What is locked is the source
# (its sha256, as downloaded) and the build: the backend is pinned (it writes its own version into the wheel,
# and pip would otherwise take the newest one) and SOURCE_DATE_EPOCH fixes the files' times, so the same
# source gives the same wheel bytes at every build, and the lock's sha256 of the wheel holds like any other.
SDIST_ONLY = ("antlr4-python3-runtime",)
BUILD_BACKEND = ("setuptools==84.2.1", "wheel==0.48.0")
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold

# PEP 508 marker environment of the GPU machine's interpreter.
MARKER_ENV = {
    "implementation_name": "cpython",
    "implementation_version": GPU_MACHINE_PYTHON,
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_release": "",
    "platform_system": "Linux",
    "platform_version": "",
    "python_full_version": GPU_MACHINE_PYTHON,
    "python_version": ".".join(GPU_MACHINE_PYTHON.split(".")[:2]),
    "sys_platform": "linux",
}


@dataclass
class Wheel:
    name: str  # canonical
    version: str
    file: str
    size: int
    sha256: str
    requires_dist: list[str]
    requires_python: str | None = None
    built_from_sdist: bool = False
    # Built wheels only: the source file it was built from, that file's sha256, and the build backend.
    sdist: str | None = None
    sdist_sha256: str | None = None
    built_with: list[str] | None = None

    @classmethod
    def read(cls, path: Path, built: bool = False) -> Wheel:
        name, version, _, _ = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as zf:
            meta_name = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
            meta = Parser().parsestr(zf.read(meta_name).decode())
        return cls(
            name=str(name),
            version=str(version),
            file=path.name,
            size=path.stat().st_size,
            sha256=file_sha256(path),
            requires_dist=meta.get_all("Requires-Dist") or [],
            requires_python=meta.get("Requires-Python"),
            built_from_sdist=built,
        )


def applies(req: Requirement, extras: set[str]) -> bool:
    """Whether ``req`` is needed on the GPU machine's interpreter, with ``extras`` of its dependant asked for."""
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**MARKER_ENV, "extra": e}) for e in ({""} | extras))


@dataclass
class Problem:
    wheel: str
    requirement: str
    why: str

    def __str__(self) -> str:
        return f"{self.wheel} needs {self.requirement}: {self.why}"


@dataclass
class Closure:
    problems: list[Problem] = field(default_factory=list)
    from_machine: dict[str, set[str]] = field(default_factory=dict)  # machine package -> wheels needing it

    @property
    def ok(self) -> bool:
        return not self.problems


def check_closure(
    wheels: list[Wheel], machine: dict[str, str | None] | None = None, roots: tuple[str, ...] = ROOTS
) -> Closure:
    """Every requirement of every wheel in the kit (and of the extras other wheels of it ask of it) is met
    by a wheel in the kit of a matching version, or by ``machine`` (name -> version, None: version unknown, the
    requirement is taken as met). Also: one wheel per name, each root in the kit, Requires-Python met."""
    machine = GPU_MACHINE if machine is None else machine
    out = Closure()
    carried: dict[str, Wheel] = {}
    for w in wheels:
        if w.name in carried:
            out.problems.append(Problem(w.file, w.name, f"two wheels of it ({carried[w.name].file})"))
        carried[w.name] = w
    for root in roots:
        if canonicalize_name(root) not in carried:
            out.problems.append(Problem("the kit", root, "a root of the kit is not in it"))
    extras = _extras_asked(carried)
    for w in carried.values():
        if w.requires_python and Version(MARKER_ENV["python_full_version"]) not in _spec(w.requires_python):
            out.problems.append(Problem(w.file, f"Python {w.requires_python}", "the GPU machine's is not"))
        for line in w.requires_dist:
            req = Requirement(line)
            if applies(req, extras[w.name]):
                _check_requirement(out, w, line, req, carried, machine)
    return out


def _extras_asked(carried: dict[str, Wheel]) -> dict[str, set[str]]:
    """The extras asked of each wheel in the kit, followed to a fixed point ("pkg[extra]" adds pkg's extra
    dependencies, which may ask for more)."""
    extras: dict[str, set[str]] = {name: set() for name in carried}
    changed = True
    while changed:
        changed = False
        for w in carried.values():
            for line in w.requires_dist:
                req = Requirement(line)
                dep = canonicalize_name(req.name)
                if dep in carried and applies(req, extras[w.name]) and not req.extras <= extras[dep]:
                    extras[dep] |= req.extras
                    changed = True
    return extras


def _check_requirement(
    out: Closure,
    w: Wheel,
    line: str,
    req: Requirement,
    carried: dict[str, Wheel],
    machine: dict[str, str | None],
) -> None:
    """One requirement of a wheel in the kit: met by the kit, else by the machine, else a problem."""
    dep = canonicalize_name(req.name)
    if dep in carried:
        if not req.specifier.contains(carried[dep].version, prereleases=True):
            out.problems.append(Problem(w.file, line, f"carried {dep} is {carried[dep].version}"))
    elif dep in machine:
        have = machine[dep]
        if have is not None and not req.specifier.contains(have, prereleases=True):
            out.problems.append(Problem(w.file, line, f"the GPU machine has {dep} {have}"))
        out.from_machine.setdefault(dep, set()).add(w.name)
    else:
        out.problems.append(Problem(w.file, line, "neither in the kit nor on the GPU machine"))


def target_tags() -> set[tags.Tag]:
    """The wheel tags the GPU machine's CPython 3.12 takes (glibc 2.39: Ubuntu 24.04, per its Python)."""
    platforms = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)]
    platforms += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    return {
        *tags.cpython_tags((3, 12), abis=["cp312"], platforms=platforms),
        *tags.compatible_tags((3, 12), "cp312", platforms),
    }


def tag_problems(wheels: list[Wheel]) -> list[str]:
    supported = target_tags()
    return [
        f"{w.file}: not a wheel for CPython 3.12 on x86-64 Linux"
        for w in wheels
        if not parse_wheel_filename(w.file)[3] & supported
    ]


def pip_dry_run(dest: Path) -> list[str]:
    """pip's own verdict: would it install these files for the GPU machine's interpreter (tags, one version
    of each)? ``--dry-run`` with ``--target``, so nothing is written; the dependencies are checked above."""
    files = sorted(str(p) for p in dest.glob("*.whl"))
    with tempfile.TemporaryDirectory() as tmp:
        args = ("install", "--dry-run", "--quiet", "--no-index", "--no-deps", "--target", tmp)
        try:
            _pip(*args, *PIP_TARGET, *files)
        except SystemExit as exc:
            return [str(exc)]
    return []


def _spec(text: str) -> SpecifierSet:
    return SpecifierSet(text)


# ---------------------------------------------------------------------------------------------- pins


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier  # constraints.txt pins each package with ==
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def pinned_version(name: str, constraints: dict[str, str] | None = None) -> str:
    name = canonicalize_name(name)
    if name in PINS:
        return PINS[name]
    constraints = constraint_pins() if constraints is None else constraints
    if name not in constraints:
        raise SystemExit(f"gpu-kit: {name} has no pin: add it to constraints.txt or to PINS in {__file__}")
    return constraints[name]


# ---------------------------------------------------------------------------------------------- lock


def read_lock(path: Path = LOCK) -> list[Wheel]:
    return [Wheel(**w) for w in json.loads(path.read_text())["wheels"]]


def write_lock(wheels: list[Wheel], path: Path = LOCK) -> None:
    payload = {
        "about": "Written by `make gpu-kit` (bench/gpu_kit.py): the wheels the GPU machine lacks, "
        "with their requirements, for the offline closure check. Do not edit by hand.",
        "python": GPU_MACHINE_PYTHON,
        "total_bytes": sum(w.size for w in wheels),
        "wheels": [_lock_entry(w) for w in sorted(wheels, key=lambda w: w.name)],
    }
    path.write_text(json.dumps(payload, indent=1) + "\n")


def _lock_entry(w: Wheel) -> dict[str, object]:
    """A wheel's fields for the lock; the source fields only for a built wheel."""
    source = ("sdist", "sdist_sha256", "built_with")
    return {k: v for k, v in dataclasses.asdict(w).items() if k not in source or w.built_from_sdist}


def tree_bytes(root: Path = ROOT) -> int:
    """The checkout as copied to the GPU machine: tracked files and untracked ones git does not ignore."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.split(b"\0")
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum(
        (root / os.fsdecode(p)).stat().st_size for p in listed if p and (root / os.fsdecode(p)).is_file()
    )


def size_report(wheels: list[Wheel], root: Path = ROOT) -> tuple[int, int, list[str]]:
    kit, tree = sum(w.size for w in wheels), tree_bytes(root)
    problems = []
    if kit + tree > LIMIT_BYTES:
        problems.append(
            f"kit {kit / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB is over the "
            f"{LIMIT_BYTES / 2**20:.0f} MiB the kit and the checkout should stay under"
        )
    return kit, tree, problems


# ---------------------------------------------------------------------------------------------- download


def _pip(*args: str, **env: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        raise SystemExit(f"gpu-kit: {' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def fetch(name: str, version: str, dest: Path, locked: dict[str, Wheel] | None = None) -> Wheel:
    """One wheel, alone (no dependencies: those are followed here, not by pip), for the GPU machine. A
    wheel already in ``dest`` is kept; a built one only when it is the ``locked`` one (file -> entry),
    whose source it then keeps, else it is built again."""
    name = canonicalize_name(name)
    existing = [p for p in dest.glob("*.whl") if _wheel_key(p) == (name, Version(version))]
    if existing and name not in SDIST_ONLY:
        return Wheel.read(existing[0])
    if existing:
        have, lock_entry = Wheel.read(existing[0], built=True), (locked or {}).get(existing[0].name)
        if lock_entry is not None and lock_entry.sha256 == have.sha256 and lock_entry.sdist_sha256:
            return lock_entry
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        if name in SDIST_ONLY:
            sdist = download_sdist(name, version, Path(tmp) / "sdist")
            wheel = build_wheel(sdist, Path(tmp))
        else:
            _pip("download", "--quiet", "--no-deps", *PIP_TARGET, "--dest", tmp, f"{name}=={version}")
            (got,) = Path(tmp).glob("*.whl")
            wheel = Wheel.read(got)
        os.replace(Path(tmp) / wheel.file, dest / wheel.file)
    return wheel


def download_sdist(name: str, version: str, dest: Path) -> Path:
    """The source distribution, as the package index serves it (its metadata prepared by the pinned
    backend, so no other setuptools is fetched)."""
    args = ("--quiet", "--no-deps", "--no-binary", name, "--dest", str(dest), f"{name}=={version}")
    with _backend_constraints() as env:
        _pip("download", *args, **env)
    (sdist,) = dest.iterdir()
    return sdist


def build_wheel(sdist: Path, dest: Path) -> Wheel:
    """A pure-Python wheel built from ``sdist`` into ``dest`` with BUILD_BACKEND, at SOURCE_DATE_EPOCH; the
    same source gives the same bytes. Refused when another backend built it (a pip that ignored the pin).
    No cache: pip would hand back a wheel it built before, whatever built it."""
    with tempfile.TemporaryDirectory() as out, _backend_constraints() as env:
        args = ("--quiet", "--no-cache-dir", "--no-deps", "--wheel-dir", out, str(sdist))
        _pip("wheel", *args, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, **env)
        (built,) = Path(out).glob("*.whl")
        with zipfile.ZipFile(built) as zf:
            info = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/WHEEL"))).decode()
        backend = next(r for r in BUILD_BACKEND if r.startswith("setuptools=="))
        if f"Generator: setuptools ({backend.split('==')[1]})" not in info:
            raise SystemExit(f"gpu-kit: {built.name} was not built by {backend}:\n{info}")
        os.replace(built, dest / built.name)
    wheel = Wheel.read(dest / built.name, built=True)
    return dataclasses.replace(
        wheel, sdist=sdist.name, sdist_sha256=file_sha256(sdist), built_with=list(BUILD_BACKEND)
    )


@contextlib.contextmanager
def _backend_constraints() -> Iterator[dict[str, str]]:
    """pip's environment pinning the build backend in its isolated build environment: PIP_CONSTRAINT
    reaches it up to pip 25.2; PIP_BUILD_CONSTRAINT is the option newer pips read (older ones ignore it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "build-constraints.txt"
        path.write_text("\n".join(BUILD_BACKEND) + "\n")
        yield {"PIP_CONSTRAINT": str(path), "PIP_BUILD_CONSTRAINT": str(path)}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel_key(path: Path) -> tuple[str, Version] | None:
    try:
        name, version, _, _ = parse_wheel_filename(path.name)
    except ValueError:
        return None
    return str(name), version


def download(dest: Path = KIT_DIR, locked: list[Wheel] | None = None) -> list[Wheel]:
    """Fetch the closure of ROOTS minus the GPU machine's packages (plus ALSO_CARRY) into ``dest``, remove
    any other wheel there (two versions of one package stop the install), and return the wheels."""
    dest.mkdir(parents=True, exist_ok=True)
    by_file = {w.file: w for w in locked or []}
    constraints = constraint_pins()
    todo = [canonicalize_name(n) for n in (*ROOTS, *ALSO_CARRY)]
    wanted_extras: dict[str, set[str]] = {}
    wheels: dict[str, Wheel] = {}
    while todo:
        name = todo.pop(0)
        if name not in wheels:
            wheels[name] = fetch(name, pinned_version(name, constraints), dest, by_file)
            print(f"  {wheels[name].file} ({wheels[name].size / 2**20:.2f} MiB)")
        w = wheels[name]
        for line in w.requires_dist:
            req = Requirement(line)
            if not applies(req, wanted_extras.get(name, set())):
                continue
            dep = canonicalize_name(req.name)
            new_extras = req.extras - wanted_extras.get(dep, set())
            if dep in GPU_MACHINE and dep not in ALSO_CARRY:
                continue
            if dep not in wheels or new_extras:
                wanted_extras.setdefault(dep, set()).update(req.extras)
                todo.append(dep)
    keep = {w.file for w in wheels.values()}
    for stale in dest.glob("*.whl"):
        if stale.name not in keep:
            print(f"  removed {stale.name} (not in the kit)")
            stale.unlink()
    return sorted(wheels.values(), key=lambda w: w.name)


def kit_wheels(dest: Path = KIT_DIR) -> list[Wheel]:
    return [
        Wheel.read(p, built=parse_wheel_filename(p.name)[0] in SDIST_ONLY) for p in sorted(dest.glob("*.whl"))
    ]


def compare_to_lock(wheels: list[Wheel], lock: list[Wheel]) -> list[str]:
    """Differences between wheels on disk and the lock (file names; bytes for downloaded wheels)."""
    have, want = {w.file: w for w in wheels}, {w.file: w for w in lock}
    problems = [f"{f}: in the lock, not in the kit" for f in sorted(want.keys() - have.keys())]
    problems += [f"{f}: in the kit, not in the lock" for f in sorted(have.keys() - want.keys())]
    for f in sorted(have.keys() & want.keys()):
        if have[f].sha256 != want[f].sha256:  # built wheels too: their build is reproducible
            problems.append(f"{f}: other bytes than the lock's (sha256)")
        if have[f].requires_dist != want[f].requires_dist:
            problems.append(f"{f}: other requirements than the lock's")
    return problems


def lock_drift(wheels: list[Wheel], lock: list[Wheel]) -> list[str]:
    """What a new download changed in files the lock already names: their bytes must not change. A built
    wheel may change only with its backend (BUILD_BACKEND changed, or the lock predates its pinning)."""
    locked = {w.file: w for w in lock}
    out = []
    for w in wheels:
        old = locked.get(w.file)
        if old is None or old.sha256 == w.sha256:
            continue
        if not w.built_from_sdist:
            out.append(f"{w.file}: the index served other bytes than the lock's (sha256)")
        elif old.sdist_sha256 and old.sdist_sha256 != w.sdist_sha256:
            out.append(f"{w.file}: its source {w.sdist} has other bytes than the lock's (sha256)")
        elif old.built_with == w.built_with:
            out.append(f"{w.file}: built again from the same source with {w.built_with}, other bytes")
    return out


def lock_source_problems(lock: list[Wheel]) -> list[str]:
    """Built wheels the lock does not tie to a source and to today's BUILD_BACKEND."""
    return [
        f"{w.file}: built from source, but the lock has no source sha256 or another backend (run `make gpu-kit`)"
        for w in lock
        if w.built_from_sdist and (not w.sdist_sha256 or w.built_with != list(BUILD_BACKEND))
    ]


def lock_pin_problems(lock: list[Wheel]) -> list[str]:
    """Lock entries whose version is not the pin (constraints.txt / PINS): the kit must be rebuilt."""
    constraints = constraint_pins()
    out = []
    for w in lock:
        try:
            pin = pinned_version(w.name, constraints)
        except SystemExit as exc:
            out.append(str(exc))
            continue
        if Version(pin) != Version(w.version):
            out.append(f"{w.name}: the lock has {w.version}, the pin is {pin} (run `make gpu-kit`)")
    return out


def report(title: str, wheels: list[Wheel]) -> list[str]:
    closure = check_closure(wheels)
    problems = [str(p) for p in closure.problems] + tag_problems(wheels)
    kit, tree, size_problems = size_report(wheels)
    print(
        f"{title}: {len(wheels)} wheels, {kit / 2**20:.1f} MiB (+ working tree {tree / 2**20:.1f} MiB: "
        f"{(kit + tree) / 2**20:.1f} of {LIMIT_BYTES / 2**20:.0f} MiB); from the GPU machine: "
        f"{', '.join(sorted(closure.from_machine))}"
    )
    return problems + size_problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("download", "check"))
    parser.add_argument("--dest", type=Path, default=KIT_DIR, help="the kit folder (default: %(default)s)")
    args = parser.parse_args(argv)
    problems: list[str] = []
    if args.command == "download":
        print(f"gpu-kit: fetching into {args.dest}")
        locked = read_lock() if LOCK.exists() else []
        wheels = download(args.dest, locked)
        problems += report("kit", wheels) + pip_dry_run(args.dest) + lock_drift(wheels, locked)
        if not problems:
            write_lock(wheels)
            print(f"gpu-kit: ready; lock written to {LOCK.relative_to(ROOT)}")
    else:
        lock = read_lock()
        problems += report("lock", lock) + lock_pin_problems(lock) + lock_source_problems(lock)
        if any(args.dest.glob("*.whl")):
            wheels = kit_wheels(args.dest)
            problems += report("kit", wheels) + compare_to_lock(wheels, lock) + pip_dry_run(args.dest)
    for p in problems:
        print(f"gpu-kit: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
