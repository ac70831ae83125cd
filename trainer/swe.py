"""Shallow-water samples, solved many at a time, reproducibly.

The seed's ``SphericalSWEDataset`` solves the PDE once per ``__getitem__`` from a fresh random initial
condition drawn from torch's global RNG: slow (one tiny solve at a time, every epoch) and not reproducible.
Here the same physics (torch-harmonics' ``ShallowWaterSolver``, the seed's time step heuristic) runs on a
whole chunk of samples at once, with initial conditions drawn from a dedicated ``torch.Generator``.

``ShallowWaterSolver.dudtspec``/``timestep`` index the field axis as the first axis, so they only take one
sample. The spherical harmonic transforms already broadcast over leading axes; ``_dudtspec`` and
``_timestep`` below are the solver's own formulas with the field axis moved to ``[:, k]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata

import torch
from torch_harmonics.examples import ShallowWaterSolver

# Bump when anything below changes the numbers a given SolverSpec produces (cache keys include it).
FORMAT_VERSION = 1
# Samples solved together. Fixed (and part of the cache key through FORMAT_VERSION) because batched
# floating-point reductions may round differently for a different chunk size.
CHUNK = 64
# The solver's own constants and schemes (gravity, hyperdiffusion, quadrature) come from torch-harmonics:
# another release may produce other numbers for the same SolverSpec, so its version is part of the key
# (the public version: "0.9.3", not the build tag "+torch2.14.1.cpu").
SOLVER_VERSION = metadata.version("torch-harmonics").split("+", 1)[0]


@dataclass(frozen=True)
class SolverSpec:
    """Everything that determines the samples, the seed's defaults included."""

    nlat: int
    nlon: int
    num_examples: int
    seed: int
    dt: float = 3600.0
    mach: float = 0.2
    grid: str = "equiangular"

    @property
    def nsteps(self) -> int:
        # The seed's heuristic (neuralop's SphericalSWEDataset): solver step for a 1 h target.
        return int(math.floor(self.dt / (256 / self.nlat * 150)))

    def key_fields(self) -> dict:
        return {
            **asdict(self),
            "nsteps": self.nsteps,
            "chunk": CHUNK,
            "format": FORMAT_VERSION,
            "solver": SOLVER_VERSION,
        }


def make_solver(spec: SolverSpec) -> ShallowWaterSolver:
    """The seed's solver set-up (float32, lmax = mmax = ceil(nlat / 3))."""
    lmax = math.ceil(spec.nlat / 3)
    solver = ShallowWaterSolver(
        spec.nlat, spec.nlon, spec.dt / spec.nsteps, lmax=lmax, mmax=lmax, grid=spec.grid
    )
    return solver.float()


def random_initial_conditions(
    solver: ShallowWaterSolver, n: int, mach: float, gen: torch.Generator
) -> torch.Tensor:
    """``ShallowWaterSolver.random_initial_condition`` for ``n`` samples, drawn from ``gen``."""
    ctype = torch.complex64
    llimit = 120  # the solver's own constant; clipped to lmax x mmax by the slice, as in the solver
    shape = (n, 3, min(llimit, solver.lmax), min(llimit, solver.mmax))
    uspec = torch.zeros(n, 3, solver.lmax, solver.mmax, dtype=ctype)
    scale = math.sqrt(4 * math.pi / llimit / (llimit + 1))
    uspec[:, :, :llimit, :llimit] = scale * torch.randn(shape, generator=gen, dtype=ctype)
    g, havg, hamp = solver.gravity.item(), solver.havg.item(), solver.hamp.item()
    uspec[:, 0] = g * hamp * uspec[:, 0]
    uspec[:, 0, 0, 0] += math.sqrt(4 * math.pi) * havg * g
    uspec[:, 1:] = mach * uspec[:, 1:] * math.sqrt(g * havg) / solver.radius.item()
    return torch.tril(uspec)


def _dudtspec(s: ShallowWaterSolver, uspec: torch.Tensor) -> torch.Tensor:
    dudt = torch.zeros_like(uspec)
    ugrid = s.spec2grid(uspec)
    uvgrid = s.getuv(uspec[:, 1:])
    tmp = s.vrtdivspec(uvgrid * (ugrid[:, 1:2] + s.coriolis))
    dudt[:, 2] = tmp[:, 0]
    dudt[:, 1] = -1 * tmp[:, 1]
    tmp = s.vrtdivspec(uvgrid * ugrid[:, 0:1])
    dudt[:, 0] = -1 * tmp[:, 1]
    tmpspec = s.grid2spec(ugrid[:, 0] + 0.5 * (uvgrid[:, 0] ** 2 + uvgrid[:, 1] ** 2))
    dudt[:, 2] = dudt[:, 2] - s.lap * tmpspec
    return dudt


def _timestep(s: ShallowWaterSolver, uspec: torch.Tensor, nsteps: int) -> torch.Tensor:
    """Third-order Adams-Bashforth with implicit hyperdiffusion, as ``ShallowWaterSolver.timestep``."""
    new = now = old = None
    for step in range(nsteps):
        new = _dudtspec(s, uspec)
        if step == 0:
            now = old = new
        elif step == 1:
            old = new
        uspec = uspec + s.dt * ((23.0 / 12.0) * new - (16.0 / 12.0) * now + (5.0 / 12.0) * old)
        uspec[:, 1:] = s.hyperdiff * uspec[:, 1:]
        new, now, old = None, new, now
    return uspec


@torch.inference_mode()
def generate(
    spec: SolverSpec, on_chunk: Callable[[int, int], None] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)``: grid fields at t=0 and t=dt, each ``(num_examples, 3, nlat, nlon)`` float32, unnormalised.
    ``on_chunk(done, total)``: after each chunk of samples (a heartbeat: a first run solves for minutes)."""
    solver = make_solver(spec)
    gen = torch.Generator().manual_seed(spec.seed)
    xs, ys = [], []
    for start in range(0, spec.num_examples, CHUNK):
        n = min(CHUNK, spec.num_examples - start)
        u0 = random_initial_conditions(solver, n, spec.mach, gen)
        u1 = _timestep(solver, u0, spec.nsteps)
        xs.append(solver.spec2grid(u0).float())
        ys.append(solver.spec2grid(u1).float())
        if on_chunk is not None:
            on_chunk(start + n, spec.num_examples)
    return torch.cat(xs), torch.cat(ys)
