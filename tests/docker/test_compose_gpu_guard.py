"""compose.yaml gives the API what the GPU guard needs (docs/gpu-guard.md): the host's PID namespace (NVML
lists the caller's namespace only), the host's user names read-only, and NVML-only GPU access on a GPU box
(LABRUN_API_RUNTIME=nvidia), while a machine without the NVIDIA toolkit still starts it (runc)."""

from __future__ import annotations

import yaml
from test_compose import base_env, compose


def _api(**env: str) -> dict:
    done = compose(base_env(**env), "config")
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["services"]["api"]


def test_the_api_sees_the_hosts_processes_and_user_names():
    api = _api()
    assert api["pid"] == "host"
    assert "/etc/passwd:/etc/passwd:ro" in api["volumes"]
    assert api["runtime"] == "runc"  # no toolkit needed to start it; the guard is off then
    assert api["environment"]["NVIDIA_DRIVER_CAPABILITIES"] == "utility"  # NVML, never compute
    assert api["environment"]["LABRUN_FOREIGN_GPU_MIN_MB"] == "100"


def test_on_a_gpu_box_the_api_gets_nvml_through_the_nvidia_runtime():
    assert _api(LABRUN_API_RUNTIME="nvidia")["runtime"] == "nvidia"
