"""What a run will need, from its config alone (no torch): the data's memory and the model's size.

- Data: ``trainer/swe.py`` generates ``x`` and ``y``, each ``(num_examples, 3, nlat, nlon)`` float32, and
  ``trainer/data.py`` caches exactly those two arrays and holds them in memory.
- Model: neuraloperator 2.0's ``FNO``/``SFNO`` with the defaults ``trainer/model.py`` leaves them (a 2-layer
  lifting and projection MLP of ratio 2, a grid positional embedding of 2 channels, per layer a spectral
  convolution with bias, a linear skip, a channel MLP of expansion 0.5 and a soft-gating skip). The
  formulas are tested equal to the real models' ``sum(p.numel())`` (tests/trainer/test_estimate.py).

``check_resources`` refuses a run over the limits; the service passes its settings, the defaults below are
sized for one 80 GB GPU and a run container of 32 GB.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainer.schema import SWE_CHANNELS, ConfigError

FLOAT32_BYTES = 4
COMPLEX64_BYTES = 8
# The data of one run in memory: x and y (and trainer/data.py's normalised copies of both, so twice this at
# the peak). 8 GiB of arrays leave room for those copies in a 32 GB container.
DEFAULT_MAX_DATA_BYTES = 8 * 2**30
# Parameters of one model. Training holds each parameter 4 times (weights, gradients, Adam's two moments):
# 500 M complex64 FNO weights are 16 GB of training state. The default FNO (hidden 256) has ~178 M.
DEFAULT_MAX_PARAMS = 500_000_000


def _get(cfg: Any, dotted: str) -> Any:
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def data_bytes(dims: list[int], num_examples: int) -> int:
    """Bytes of the cached arrays: x and y, each (num_examples, 3, nlat, nlon) float32."""
    nlat, nlon = (int(d) for d in dims)
    return 2 * int(num_examples) * SWE_CHANNELS * nlat * nlon * FLOAT32_BYTES


def model_params(
    name: str,
    n_modes: list[int],
    in_channels: int,
    out_channels: int,
    hidden_channels: int,
    n_layers: int,
) -> tuple[int, int]:
    """``(count, bytes)``: the count as torch's ``sum(p.numel())`` (a complex weight counts once) and the
    bytes the parameters take."""
    h, m0, m1 = int(hidden_channels), int(n_modes[0]), int(n_modes[1])
    lifting_in = int(in_channels) + 2  # the grid positional embedding adds one channel per dimension
    lift = lifting_in * 2 * h + 2 * h + 2 * h * h + h  # MLP in -> 2h -> h, with biases
    proj = h * 2 * h + 2 * h + 2 * h * int(out_channels) + int(out_channels)  # MLP h -> 2h -> out
    mlp = round(h * 0.5)
    real_per_layer = h + h * h + (h * mlp + mlp + mlp * h + h) + h  # bias, skip, channel MLP, soft gating
    if name == "fno":
        complex_per_layer = h * h * m0 * (m1 // 2 + 1)  # dense complex64 weights; rfft keeps m1 // 2 + 1
        count = lift + proj + int(n_layers) * (real_per_layer + complex_per_layer)
        size = (lift + proj + int(n_layers) * real_per_layer) * FLOAT32_BYTES
        return count, size + int(n_layers) * complex_per_layer * COMPLEX64_BYTES
    if name == "sfno":
        # One complex weight per degree, shared by all orders, stored as (real, imaginary) float32 pairs.
        spectral = 2 * h * h * m0
        count = lift + proj + int(n_layers) * (real_per_layer + spectral)
        return count, count * FLOAT32_BYTES
    raise ConfigError(f"model.name={name!r} has no parameter formula")


def estimate(job: Mapping[str, Any] | Any) -> dict[str, int]:
    """The resources of a run (a resolved job config, or the same as plain dicts): ``data_bytes``,
    ``param_count``, ``param_bytes`` and ``training_state_bytes`` (weights, gradients, Adam's moments)."""
    count, size = model_params(
        str(_get(job, "model.name")),
        list(_get(job, "model.n_modes")),
        _get(job, "model.in_channels"),
        _get(job, "model.out_channels"),
        _get(job, "model.hidden_channels"),
        _get(job, "model.n_layers"),
    )
    return {
        "data_bytes": data_bytes(list(_get(job, "data.dims")), _get(job, "data.num_examples")),
        "param_count": count,
        "param_bytes": size,
        "training_state_bytes": 4 * size,
    }


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def check_resources(
    job: Any, max_data_bytes: int = DEFAULT_MAX_DATA_BYTES, max_params: int = DEFAULT_MAX_PARAMS
) -> dict[str, int]:
    """``estimate(job)``, or a ConfigError naming the estimate, the limit and the keys that drive it."""
    est = estimate(job)
    if est["data_bytes"] > max_data_bytes:
        dims, n = list(_get(job, "data.dims")), _get(job, "data.num_examples")
        raise ConfigError(
            f"data.dims={dims} with data.num_examples={n} needs {_size(est['data_bytes'])} of data "
            f"(2 x {n} x {SWE_CHANNELS} x {dims[0]} x {dims[1]} float32); this server allows at most "
            f"{_size(max_data_bytes)}: use fewer examples or a coarser grid"
        )
    if est["param_count"] > max_params:
        model = _get(job, "model")
        raise ConfigError(
            f"model {_get(job, 'model.name')} with hidden_channels={model['hidden_channels']}, "
            f"n_layers={model['n_layers']}, n_modes={list(model['n_modes'])} has {est['param_count']:,} "
            f"parameters; this server allows at most {max_params:,}: reduce model.hidden_channels, "
            "model.n_layers or model.n_modes"
        )
    return est
