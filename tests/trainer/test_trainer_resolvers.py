"""The config's resolvers (trainer/resolvers.py): the seed's set, light enough for the service."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from trainer import resolvers


def test_output_dir_switches_to_debug():
    assert resolvers.output_dir("2026-01-01/x", False) == "2026-01-01/x"
    assert resolvers.output_dir("2026-01-01/x", True) == "debug/x"  # each debug run has its own folder
    with pytest.raises(ValueError, match="debug must be true or false"):
        resolvers.output_dir("x", "yes")


def test_int_divide_exact_or_error_naming_the_keys():
    assert resolvers.int_divide(64, 16) == 4
    with pytest.raises(
        ValueError, match="effective_batch_size=64 is not divisible by num_devices\\*batch_size=24"
    ):
        resolvers.int_divide(64, 24)
    with pytest.raises(ValueError, match="positive"):
        resolvers.int_divide(64, 0)


@pytest.mark.parametrize(("devices", "n"), [(1, 1), (2, 2), ([0, 3], 2), ("auto", 1), ("4", 4)])
def test_len_counts_devices(devices, n):
    assert resolvers.length(devices) == n
    assert resolvers.isdist(devices) is (n > 1)


def test_small_helpers():
    assert resolvers.mult(3, 4) == 12
    assert resolvers.prepend_underscore("") == ""
    assert resolvers.prepend_underscore("a=1") == "_a=1"
    assert resolvers.abspath("rel").startswith("/")


def test_no_resolver_touches_the_disk():
    # The seed's mkdirs created directories while a config resolved; the service resolves to validate.
    resolvers.register()
    assert "mkdirs" not in resolvers.RESOLVERS
    assert not OmegaConf.has_resolver("mkdirs")


def test_register_is_idempotent_and_resolves_in_yaml():
    resolvers.register()
    resolvers.register()
    cfg = OmegaConf.create(
        {
            "devices": [0, 1],
            "n": "${len:${devices}}",
            "d": "${isdist:${devices}}",
            "acc": "${int_divide:64,${mult:${n},8}}",
        }
    )
    assert (cfg.n, cfg.d, cfg.acc) == (2, True, 4)


def test_light_modules_do_not_import_torch():
    # The CLI too: --cfg and bad overrides answer without paying for torch.
    code = "import sys, trainer.config, trainer.resolvers, trainer.naming, trainer.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
