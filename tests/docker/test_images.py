"""The images as built (docker/trainer.Dockerfile and docker/api.Dockerfile, on the test base): who they
run as, what they hold, and that the service image stays free of torch and CUDA."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(2400)]


def run(engine, image: str, code: str) -> str:
    out = engine.containers.run(image, entrypoint=["python", "-c", code], remove=True, network_mode="none")
    return out.decode().strip()


def test_trainer_image(engine, trainer_image):
    config = engine.images.get(trainer_image).attrs["Config"]
    assert config["User"] == "10001:10001"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["LABRUN_CODE_VERSION"] not in ("", "unknown")  # the commit, baked in
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert config["Labels"]["org.opencontainers.image.revision"] == env["LABRUN_CODE_VERSION"]
    assert config["Entrypoint"] == ["python", "-m", "trainer"]
    versions = run(
        engine,
        trainer_image,
        "import torch, torch_harmonics, neuralop, lightning, wandb, hydra, trainer.naming;"
        "print(torch.__version__, torch.version.cuda, torch_harmonics.__version__, lightning.__version__,"
        " wandb.__version__)",
    )
    torch_version, cuda, harmonics, lightning_version, wandb_version = versions.split()
    assert torch_version.startswith("2.14.1")
    assert cuda.startswith("13.")
    assert (lightning_version, wandb_version) == ("2.6.6", "0.31.0")
    assert harmonics.startswith("0.9.3")  # e.g. 0.9.3+torch2.14.1.cpu
    # The code hash baked in at build (no .git in the image) is the hash of the code it holds, and run.json
    # records it (trainer/codestate.py).
    baked = run(
        engine,
        trainer_image,
        "from pathlib import Path; from trainer import codestate, provenance;"
        "print(provenance.code_version()['code_hash'], codestate.tree_hash(Path('/opt/labrun')))",
    )
    recorded, recomputed = baked.split()
    assert recorded == recomputed


def test_api_image_is_slim(engine, api_image):
    image = engine.images.get(api_image)
    assert image.attrs["Config"]["User"] == "10001:10001"  # compose runs it as root, for the socket
    assert image.attrs["Size"] < 800 * 2**20, image.attrs["Size"]
    found = run(
        engine,
        api_image,
        "import importlib.util as u; import app.main, docker, fastapi, hydra;"
        "print([m for m in ('torch', 'lightning', 'neuralop', 'nvidia') if u.find_spec(m)])",
    )
    assert found == "[]"
