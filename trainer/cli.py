"""``python -m trainer [--config-name=NAME] [--cfg job|hydra|all] [overrides...]``: one run, start to end.

The run's lifecycle in one place:
1. read the run's environment (``trainer/runenv.py``) and plan the run (``trainer/plan.py``: compose,
   check, name; light imports only); bad input -> message on stderr naming the variable or key, exit 2,
   nothing created;
2. create the run directory (exit 2 if it exists), write ``.hydra/``, start ``train.log`` and ``run.json``;
3. import the training stack and train;
4. rewrite ``run.json`` with how it ended: ``succeeded`` (exit 0), ``failed`` (1) or ``cancelled`` (143 for
   SIGTERM, 130 for SIGINT).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from trainer import config, init_from, rundir
from trainer import plan as run_plan
from trainer.cancel import CancelGuard, RunCancelled
from trainer.heartbeat import PhaseReporter
from trainer.provenance import RunManifest, utc_now
from trainer.runenv import RunEnv, RunEnvError

EXIT_USAGE = 2
log = logging.getLogger("trainer")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train SFNO/FNO on shallow-water data. Overrides are Hydra's: key=value, group=option, "
        "+new_key=value.",
    )
    parser.add_argument(
        "--config-name",
        "-cn",
        default=config.DEFAULT_CONFIG_NAME,
        help="top-level config in conf/ (default: %(default)s)",
    )
    parser.add_argument(
        "--cfg",
        "-c",
        choices=("job", "hydra", "all"),
        help="print the config (job: resolved, without the hydra node) and exit",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=fno training.lr=0.01")
    return parser.parse_intermixed_args(argv)  # Hydra allows flags between overrides


def main(argv: Sequence[str] | None = None) -> int:
    started = utc_now()
    args = parse_args(argv)
    overrides = list(args.overrides)
    try:
        env = RunEnv.from_env()  # first: the rest of the run reads it where it needs it, known good
    except RunEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    child_of = _ddp_parent_run(env)
    try:
        plan = run_plan.plan_run(
            overrides,
            args.config_name,
            run_name=child_of[1] if child_of else None,
            keep_config=args.cfg in ("hydra", "all"),
        )
    except config.ConfigError as exc:
        print(f"error: invalid config: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.cfg:
        _print_cfg(args.cfg, plan)
        return 0
    if child_of:
        return execute_ddp_child(plan.job, child_of[0])
    problem = init_from.check(plan.job.get("init_from"), env)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        # A generated name taken by a run started in the same second with the same overrides: the next one
        # (<name>_r2, ...) rather than a failure. A run_name given is never changed.
        plan, run_dir = run_plan.claim(
            plan, lambda p: rundir.create(p.job.output_dir, env.resume, env.run_dir)
        )
    except OSError as exc:  # NameInUse included
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return execute(plan.job, plan.hydra, run_dir, plan.name, overrides, args.config_name, started)


def execute(
    job, hydra_node, run_dir, name: str, overrides: list[str], config_name: str, started: str | None = None
) -> int:
    def new_record() -> RunManifest:
        return RunManifest(
            run_dir / "run.json",
            name=name,
            overrides=overrides,
            config_name=config_name,
            seed=int(job.seed),
            start_time=started,
        )

    # Installed first: the run directory exists, so a SIGTERM from now on must end in a run.json that says
    # "cancelled". Gathering run.json's provenance (git, package versions) takes a moment; a signal then
    # is only noted, and acted on once run.json exists.
    guard = CancelGuard().install()
    record: RunManifest | None = None
    # Lightning starts the other ranks of a multi-device run by running this command again: they join
    # this run (see execute_ddp_child) instead of creating a run of their own.
    os.environ.update(RunEnv(run_dir=run_dir, run_name=name).to_env())
    try:
        # Provenance (git, package versions) and ~10 s of imports: step-less, and neither hangs (heartbeat.py)
        with PhaseReporter(run_dir / "progress.json").busy("starting"):
            with guard.deferred():
                record = new_record()
                record.begin_attempt(RunEnv.from_env().attempt)
                record.write()
            rundir.write_hydra_files(run_dir, job, hydra_node, overrides)
            rundir.setup_logging(run_dir)
            mode = rundir.configure_wandb_env(run_dir, bool(job.debug))
            log.info("run %s in %s (wandb %s)", name, run_dir, mode)
            from trainer.train import train  # the training stack

        record.set_devices(str(job.accelerator))
        if job.get("init_from"):  # run.json names where it started from
            record.data["init_from"] = init_from.describe(
                str(job.init_from), RunEnv.from_env().init_from_ckpt
            )
            record.write()

        rundir.route_library_logs()
        metrics = train(job, run_dir, guard)
        status, detail, code = "succeeded", None, 0
        log.info("run %s succeeded: %s", name, ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items())))
    except BaseException as exc:  # every way out is recorded, then reported by the exit status
        if guard.preempted:  # checkpointed: the scheduler (or POST /runs/{name}/resume) runs it again
            status, detail, code = "preempted", guard.reason, guard.exit_code
            log.warning("run %s preempted; it resumes from its last checkpoint", name)
        elif isinstance(exc, RunCancelled) or guard.received:
            # Also a cancel that surfaced as another error: a process-group SIGTERM ends DataLoader workers
            # too, which the loader reports as a RuntimeError.
            status, detail, code = "cancelled", guard.reason, guard.exit_code
            log.warning("run %s cancelled", name)
        else:
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
            code = 1
            log.error("run %s failed:\n%s", name, traceback.format_exc())
    guard.cleaning_up()
    (record or new_record()).finish(status, detail)
    guard.uninstall()
    return code


def _ddp_parent_run(env: RunEnv) -> tuple[Path, str] | None:
    """``(run_dir, name)`` when this process is a rank > 0 that Lightning started for a running run."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and env.run_dir and env.run_name:
        return env.run_dir, env.run_name
    return None


def execute_ddp_child(job, run_dir: Path) -> int:
    """Another rank of a run: trains in the same directory; rank 0 alone writes the records and logs."""
    rundir.setup_logging(None)
    guard = CancelGuard().install()
    try:
        from trainer.train import train

        rundir.route_library_logs()
        train(job, run_dir, guard)
        return 0
    except BaseException:
        if guard.received:
            return guard.exit_code
        log.exception("rank %s failed", os.environ.get("LOCAL_RANK"))
        return 1
    finally:
        guard.uninstall()


def _print_cfg(which: str, plan: run_plan.RunPlan) -> None:
    if which == "job":
        print(OmegaConf.to_yaml(plan.job), end="")
    elif which == "hydra":
        print(OmegaConf.to_yaml({"hydra": plan.config.hydra}), end="")
    else:
        print(OmegaConf.to_yaml(plan.config), end="")
