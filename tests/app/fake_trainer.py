"""A stand-in for ``python -m trainer`` that keeps the service tests fast (standard library only).

It behaves like the trainer where the service can see it: it takes ``run_name=`` and ``log_dir=``, creates
``<log_dir>/<YYYY-MM-DD>/<name>`` (refusing an existing one), writes ``progress.json`` and ``metrics.csv``
(a ``train_loss`` row per step, ``val_loss`` at the end) and prints log lines.
Extra overrides steer it: ``+extra.fake_sleep=SECONDS``, ``+extra.fake_exit=CODE``, ``+extra.fake_lines=N``, and the ways
real trainers misbehave: ``+extra.fake_on_term=ignore|exit0`` (SIGTERM ignored, or caught with a clean exit 0),
``+extra.fake_orphan=1`` (leaves a ``sleep 300`` in its process group; its pid in ``<run_dir>/orphan.pid``),
``+extra.fake_fail_once=CODE`` (exits CODE unless it is a resumed attempt), ``+extra.fake_huge_line=BYTES`` (one line of that size), ``+extra.fake_cr=N`` (N ``\r`` progress updates on one line),
``+extra.fake_no_ckpt=1`` (a preemptible run that writes no checkpoint when preempted),
``+extra.fake_val_loss=X`` (the final validation loss, default 0.5; ``+extra.fake_exit_if_val_loss=X``: exit 3
when it is X), ``+extra.fake_chatter=SECONDS`` (after its first step, a log line every 0.1 s for that long
and no progress: busy, not stalled), ``+extra.fake_hang=SECONDS`` (after its first step, silent: no
progress, no output, for that long: stalled), ``+extra.fake_phase=NAME`` (the ``phase`` its progress.json
reports, as the trainer's heartbeat does: ``training``, ``data``, ...). ``output_dir_scheme=`` files the run
elsewhere (a sweep's run), as it does for the trainer.
Every start is appended to ``<log_dir>/fake_starts.log`` so tests can prove that nothing runs twice.
Preemption as the trainer does it (trainer/resume.py): a run started with ``LABRUN_PREEMPTIBLE=1`` takes a
SIGTERM without the cancel marker (``LABRUN_CANCEL_MARKER``), or a SIGUSR1, as a preemption: it writes
``<run_dir>/ckpt/last.ckpt`` and exits 75; a resumed attempt prints whether it found that checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def _args(argv: list[str]) -> dict[str, str]:
    """key -> value of the override lines (``+extra.fake_sleep=1`` -> ``extra.fake_sleep``: ``1``)."""
    args = {}
    for arg in argv:
        key, _, value = arg.lstrip("+").partition("=")
        args[key] = value.strip("'")
    return args


def _on_preemption(args: dict[str, str], run_dir: str) -> None:
    """A preemptible run (as labrun starts a low-priority one): SIGTERM without the cancel marker means
    save a checkpoint and exit 75; with the marker it is a cancel (143)."""
    if os.environ.get("LABRUN_PREEMPTIBLE") != "1":
        return

    def stop(signum: int, _frame: object) -> None:
        marker = os.environ.get("LABRUN_CANCEL_MARKER")
        if marker and os.path.exists(marker):
            sys.exit(128 + signum)
        if not args.get("extra.fake_no_ckpt"):
            os.makedirs(os.path.join(run_dir, "ckpt"), exist_ok=True)
            with open(os.path.join(run_dir, "ckpt", "last.ckpt.tmp"), "w") as f:
                f.write(f"{time.time()}\n")
            os.replace(
                os.path.join(run_dir, "ckpt", "last.ckpt.tmp"), os.path.join(run_dir, "ckpt", "last.ckpt")
            )
        print("fake trainer: preempted: checkpointed, exit 75", flush=True)
        sys.exit(75)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(
        signal.SIGUSR1, stop
    )  # a cluster's warning before the job's time limit, as the trainer takes it


def _misbehave(args: dict[str, str], run_dir: str) -> None:
    """The ways of real trainers that the service must cope with: SIGTERM ignored or answered with exit 0,
    a process left behind in the run's group."""
    on_term = args.get("extra.fake_on_term")
    if on_term == "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    elif on_term == "exit0":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.get("extra.fake_orphan"):
        orphan = subprocess.Popen(["sleep", "300"])  # stays in this process group
        with open(os.path.join(run_dir, "orphan.pid"), "w") as f:
            f.write(str(orphan.pid))


def _chatter_or_hang(args: dict[str, str]) -> None:
    """A run that keeps logging without progress (``fake_chatter``), or one that hangs (``fake_hang``)."""
    until = time.monotonic() + float(args.get("extra.fake_chatter", 0))
    while time.monotonic() < until:
        print("fake trainer: still busy", flush=True)
        time.sleep(0.1)
    time.sleep(float(args.get("extra.fake_hang", 0)))


def _print_lines(args: dict[str, str], name: str, lines: int) -> None:
    for i in range(lines):
        print(f"fake trainer {name}: line {i + 1}", flush=True)
    if args.get("extra.fake_huge_line"):
        print("x" * int(args["extra.fake_huge_line"]), flush=True)
    if args.get("extra.fake_cr"):
        print(
            "".join(f"progress {i}\r" for i in range(int(args["extra.fake_cr"]))) + "progress done",
            flush=True,
        )


def main(argv: list[str]) -> int:
    args = _args(argv)
    name, log_dir = args["run_name"], args["log_dir"]
    sleep, code, lines = (
        float(args.get("extra.fake_sleep", 0)),
        int(args.get("extra.fake_exit", 0))
        or (int(args.get("extra.fake_fail_once", 0)) if os.environ.get("LABRUN_RESUME") != "1" else 0),
        int(args.get("extra.fake_lines", 3)),
    )
    with open(os.path.join(log_dir, "fake_starts.log"), "a") as f:
        f.write(f"{name} {os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES')!r} {time.time()}\n")
    # <log_dir>/<YYYY-MM-DD>/<name>, or where output_dir_scheme= files it (a sweep's run)
    run_dir = os.path.join(log_dir, args.get("output_dir_scheme") or os.path.join(name[:10], name))
    # like the trainer: an existing run directory is an error, unless the run resumes (a requeued attempt)
    os.makedirs(run_dir, exist_ok=os.environ.get("LABRUN_RESUME") == "1")
    if os.environ.get("LABRUN_RESUME") == "1":
        found = os.path.exists(os.path.join(run_dir, "ckpt", "last.ckpt"))
        print(f"fake trainer {name}: resumed, {'from ckpt/last.ckpt' if found else 'from the beginning'}")
    _on_preemption(args, run_dir)
    _misbehave(args, run_dir)
    _print_lines(args, name, lines)
    steps = 4
    val_loss = float(args.get("extra.fake_val_loss", 0.5))
    if args.get("extra.fake_exit_if_val_loss") and float(args["extra.fake_exit_if_val_loss"]) == val_loss:
        code = 3  # one run of a sweep fails: the one with this val_loss
    for step in range(1, steps + 1):
        progress = {
            "epoch": 0,
            "max_epochs": 1,
            "global_step": step,
            "total_steps": steps,
            "fraction": step / steps,
            "train_loss": 1.0 / step,
            "val_loss": val_loss if step == steps else None,
            "metrics": {"train_loss": 1.0 / step, **({"val_loss": val_loss} if step == steps else {})},
            "updated_at": time.time(),
        }
        if args.get("extra.fake_phase"):
            progress["phase"] = args["extra.fake_phase"]
        tmp = os.path.join(run_dir, "progress.json.tmp")
        with open(tmp, "w") as f:
            json.dump(progress, f)
        os.replace(tmp, os.path.join(run_dir, "progress.json"))
        with open(os.path.join(run_dir, "metrics.csv"), "a") as f:  # as Lightning's CSVLogger: sparse rows
            f.write("epoch,step,train_loss,train_loss_epoch,val_loss\n" if step == 1 else "")
            f.write(f"0,{step - 1},{1.0 / step},,\n")
            if step == steps:  # the epoch's end: the epoch mean and the validation loss
                f.write(f"0,{step - 1},,{sum(1.0 / s for s in range(1, steps + 1)) / steps},{val_loss}\n")
        time.sleep(sleep / steps)
        if step == 1:
            _chatter_or_hang(args)
    if code:
        print(f"fake trainer {name}: failing with exit code {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
