"""Validation: hostile overrides never reach the disk or the queue; honest mistakes get a message that fixes them."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from service_helpers import make_settings

from app.errors import InvalidRun
from app.validation import RunValidator
from trainer.plan import DeviceLimits

HOSTILE = [
    # sweeps: a request is one run
    "training.lr=0.1,0.2",
    "model=fno,sfno",
    "training.lr=range(1,3)",
    "model=glob(*)",
    "training.lr=choice(0.1,0.2)",
    "training.lr=interval(0,1)",
    # interpolations and resolvers read the server's environment and files, or create directories
    "+x=${oc.env:HOME}",
    "+y=${mkdirs:/tmp/labrun-hostile-mkdirs}",
    "training.lr=${oc.env:PATH}",
    "+z='${oc.env:HOME}'",
    "+a=[1,${oc.env:HOME}]",
    "+b={k:${oc.env:HOME}}",
    "wandb_project=${hydra:runtime.cwd}",
    "+c=$\\{oc.env:HOME\\}",
    "+d=str(${oc.env:HOME})",
    "+e='\\${oc.env:HOME}'",
    '+f="${abspath:/etc}"',
    # Hydra's own behaviour: search paths, launchers, callbacks, run dirs
    "hydra.run.dir=/tmp/evil",
    "hydra/launcher=basic",
    "+hydra.searchpath=[file:///etc]",
    "+hydra.callbacks.x._target_=os.system",
    "~hydra",
    "hydra.job.chdir=true",
    "++hydra.verbose=true",
    # running code: instantiate-style keys, anywhere
    "+_target_=os.system",
    "+model._target_=os.system",
    "+x={_target_:os.system}",
    "+x={a:{_partial_:true}}",
    "+_self_=1",
    "+model._args_=[1]",
    "+x._recursive_=false",
    "+x._convert_=all",
    # placing or naming the run
    "run_name=evil",
    "log_dir=/tmp",
    "output_dir=/tmp",
    "+output_dir_scheme=x",
    "ckpt_dir=/tmp",
    "wandb_dir=/tmp",
    "wandb_run_name=evil",
    "paths=cluster",
    "paths.data_root=/etc",
    "~run_name",
    "~log_dir",
    "++log_dir=/tmp",
    "+paths.data_root=/x",
    "~paths",
    # package overrides, group options that are paths, odd keys
    "model@foo=fno",
    "data@_global_=32x64",
    "data=../../../etc/passwd",
    "model=/etc/passwd",
    "+data/../../x=1",
    "+nogroup/x=1",
    # control characters and unparsable lines
    "+x=a\x00b",
    "+x=a\nb",
    "=1",
    "training.lr=[",
    "a=)",
    # device requests that cannot be honoured
    "devices=-1",
    "accelerator=tpu",
]


NO_GPUS = DeviceLimits(gpus=0, cpu_processes=os.cpu_count())


@pytest.fixture
def validator(output_dir: Path) -> RunValidator:
    return RunValidator(make_settings(output_dir), NO_GPUS)


def _tree(path: Path) -> set[str]:
    return {
        os.path.relpath(os.path.join(root, n), path)
        for root, dirs, files in os.walk(path)
        for n in dirs + files
    }


@pytest.mark.parametrize("override", HOSTILE)
def test_hostile_override_is_refused_before_anything_is_written(client, output_dir, override):
    before = _tree(output_dir)
    response = client.post("/runs", json={"overrides": ["model=fno", override]})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert detail
    assert "Traceback" not in detail
    assert str(Path.home()) not in detail
    assert client.get("/runs").json()["count"] == 0
    assert _tree(output_dir) == before
    assert not Path("/tmp/labrun-hostile-mkdirs").exists()


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["training.lr=0.1,0.2"], "is a sweep"),
        (["+x=${oc.env:HOME}"], "interpolation"),
        (["hydra.run.dir=/tmp"], "changes Hydra itself"),
        (["+model._target_=os.system"], "reserved key '_target_'"),
        (["run_name=evil"], "the service sets it"),
        (["model@foo=fno"], "package"),
        (["data=32x65"], "Available options in 'data'"),
        (["training.foo=1"], "training.foo is not a key of this config"),
        (["training.lr=abc"], "training.lr expects a number"),
        (["batch_size=7"], "not divisible"),
        (["+required=???"], "required is not a key of this config"),
        (["model.name=unet"], "model.name must be one of 'fno', 'sfno'"),
        (["accelerator=gpu"], "needs 1 GPU(s)"),
        (["num_workers=1000000"], "num_workers must be between 0 and 64"),
        (["training.max_epochs=1e12"], "training.max_epochs expects an integer"),
        # issue 9: each was queued, though the run could not work or would harm the box
        (["precision=banana"], "precision='banana' is not allowed: precision must be one of"),
        (["strategy=ddp_spawn"], "strategy='ddp_spawn' is not allowed: strategy must be one of"),
        (["model.hidden_channels=0"], "model.hidden_channels=0 is not allowed"),
        (["model.n_modes=[0,0]"], "model.n_modes=[0,0] is not allowed"),
        (["debug_batches=-5"], "debug_batches=-5 is not allowed"),
        (["training.val_check_interval=0"], "training.val_check_interval=0 is not allowed"),
        (["log_every_n_steps=0"], "log_every_n_steps=0 is not allowed"),
        (["num_sanity_val_steps=-5"], "num_sanity_val_steps=-5 is not allowed"),
        (["training.lr=-1"], "training.lr=-1.0 is not allowed"),
        (["data.dims=[100000,100000]"], "data.dims=[100000,100000] is not allowed"),
        (["+trainer.plugins=x"], "trainer is not a key of this config"),
        (
            [
                f"devices={(os.cpu_count() or 1) + 1}",
                "batch_size=1",
                f"training.effective_batch_size={(os.cpu_count() or 1) + 1}",
            ],
            "training processes",
        ),
        (["+x=1"] * 65, "too many overrides (65)"),
        (["+x=" + "a" * 600], "at most 512"),
        ([f"+x{i}=" + "a" * 500 for i in range(17)], "at most 8192"),
    ],
)
def test_refusals_name_the_problem_and_the_fix(validator, overrides, expected):
    with pytest.raises(InvalidRun) as caught:
        validator.plan(overrides, None)
    assert expected in caught.value.detail


def test_config_name_must_be_one_of_the_configs(validator):
    for name in ("../conf/neuraloperator", "globals", "nope", "neuraloperator.yaml"):
        with pytest.raises(InvalidRun, match="unknown config_name"):
            validator.plan([], name)


def test_a_planner_checks_every_run_as_plan_does(validator):
    # A sweep's planner checks what its runs share once: each run must still get plan's answer or error,
    # also after the same lines passed in an earlier run.
    def outcome(planner, lines):
        try:
            run = planner(lines, when=when)
        except InvalidRun as exc:
            return exc.detail
        return run.name, run.run_dir, run.resources, run.gpu_need, run.seed

    when = dt.datetime(2026, 1, 2, 3, 4, 5)  # one time: the names compare
    planner = validator.planner(None)
    runs = [
        ["model=fno", "training.lr=0.01"],
        ["model=fno", "training.lr=5"],  # a shared line already known, a bad value
        ["model=fno", "+x=${oc.env:HOME}"],
        ["model=fno", "model=fno", "data=nope"],
        ["model=fno"] * 65,  # known lines, but too many of them
        ["model=fno", "training.lr=0.02"],
    ]
    for lines in runs:
        assert outcome(planner, lines) == outcome(lambda o, **p: validator.plan(o, None, **p), lines)
    with pytest.raises(InvalidRun, match="unknown config_name 'nope'"):
        validator.planner("nope")(["model=fno"])


def test_validation_creates_nothing_and_derives_name_dir_and_gpu_need(output_dir):
    validator = RunValidator(make_settings(output_dir), DeviceLimits(gpus=2, cpu_processes=os.cpu_count()))
    run = validator.plan(["model=fno", "data=32x64", "training.lr=0.01"], None)
    assert run.name.endswith("_fno32x64_data=32x64_model=fno_training.lr=0.01")
    assert run.run_dir == f"{run.name[:10]}/{run.name}"
    assert run.gpu_need == 0
    assert run.seed == 42
    assert run.config_name == "neuraloperator"
    assert validator.plan(["accelerator=gpu", "devices=2", "batch_size=8"], None).gpu_need == 2
    assert validator.plan(["accelerator=auto"], None).gpu_need == 1
    debug = validator.plan(["debug=true"], None)
    assert debug.run_dir == f"debug/{debug.name}"  # its own folder: two debug runs never share one
    with pytest.raises(InvalidRun, match="ask for a count"):
        validator.plan(["accelerator=gpu", "devices=[0,3]", "batch_size=8"], None)
    assert list(output_dir.iterdir()) == []


def test_same_request_renamed_stays_distinct(validator):
    run = validator.plan(["model=fno"], None)
    assert run.renamed(2).name == run.name + "_r2"
    assert run.renamed(2).run_dir.endswith("_r2")


def test_the_services_fast_compose_validates_exactly_like_a_fresh_compose(output_dir):
    """The service validates through trainer/config_cache.py; every answer must equal a fresh compose's."""
    from trainer.config_cache import compose_cached

    settings = make_settings(output_dir)
    fresh, fast = (
        RunValidator(settings, NO_GPUS),
        RunValidator(settings, NO_GPUS, compose=compose_cached),
    )
    cases = [[h] for h in HOSTILE] + [
        ["data=32x65"],
        ["training.foo=1"],
        ["training.lr=abc"],
        ["batch_size=7"],
        ["+required=???"],
        ["model.name=unet"],
        ["model=fno", "data=32x64", "training.lr=0.01"],
        ["debug=true"],
        ["~training.lr"],
        ["model=sfno", "model.n_modes=[8,16]"],
        ["+foo.bar=3"],
        ["training=train_default", "seed=3"],
    ]

    def answer(validator, overrides):
        try:
            run = validator.plan(overrides, None)
        except InvalidRun as exc:
            return exc.detail
        return (
            run.name[20:],
            run.run_dir.replace(run.name, "<name>"),
            run.gpu_need,
            run.seed,
        )  # minus the time

    for overrides in cases:
        assert answer(fast, overrides) == answer(fresh, overrides), overrides


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"overrides": ["~model"]}', "removes the config group 'model'"),
        (b'{"overrides": ["~data=64x128"]}', "removes the config group 'data'"),
        (b'{"overrides": ["~training"]}', "removes the config group 'training'"),
        (b'{"overrides": ["devices=[a]"]}', "devices must be a list of device ids"),
        (b'{"overrides": ["devices=[[0]]"]}', "devices must be a list of device ids"),
        (b'{"overrides": ["devices=[null]"]}', "devices must be a list of device ids"),
        (b'{"overrides": ["devices=1.5"]}', "devices must be a number of devices"),
        (b'{"overrides": ["+x=\\ud800"]}', "not valid text"),
        (b'{"overrides": ["\\udfff=1"]}', "not valid text"),
    ],
)
def test_odd_overrides_are_a_422_not_a_500(client, body, expected):
    response = client.post("/runs", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]
    assert client.get("/runs").json()["count"] == 0
