"""``labrun``: the command line of a labrun service. Arguments, one function per command, exit statuses.

Only the standard library is imported up front: httpx (``client.Client``) and rich (``render``'s drawing
functions) load when a command needs them, so ``labrun --help`` starts in about a tenth of a second.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from labrun import account_cli, completion, gpus_cli, notify_cli, pull_cli, render, reserve_cli, userconfig
from labrun.client import (
    EXIT_CANCELLED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_UNREACHABLE,
    Client,
    CliError,
)
from labrun.durations import parse_duration
from labrun.statuses import TERMINAL

EXIT_STATUS_BY_RUN = {"succeeded": EXIT_OK, "failed": EXIT_RUN_FAILED, "cancelled": EXIT_CANCELLED}
EXIT_BUG = 70
CANCEL_SETTLE_S = 30.0  # past the server's grace period (SIGTERM, then SIGKILL) in most set-ups
UNREACHABLE_PATIENCE_S = 60.0  # while waiting: a service restart takes seconds; runs go on meanwhile

DESCRIPTION = """\
Submit, watch and manage training runs on a labrun service, over its HTTP API.

  labrun submit model=fno data=32x64 training.lr=0.01     # Hydra overrides verbatim; prints the run name
  labrun submit --wait model=fno                           # a live progress bar until the run ends
  labrun ls --status running,queued                        # a table; --json for scripts
  labrun logs -f NAME                                      # follow the log until the run ends
  labrun gpus                                              # who runs what on which GPU, and the queue
  labrun gpus ignore --command '*jupyter*'                 # (admin) a process the GPU guard lets be
"""

EPILOG = """\
environment:
  LABRUN_URL     the service (default: the one `labrun login` kept, else http://127.0.0.1:8000);
                 --url overrides it
  LABRUN_TOKEN   sent as "Authorization: Bearer <token>" when set; --token overrides it; without
                 either, the token `labrun login` kept for that server
                 (an admin creates one with `python -m app users add NAME`)

exit status:
  0    done (with --wait/--follow: the run succeeded)
  1    --wait/--follow: the run failed
  2    bad arguments, or the server refused the request as invalid (422: its message names the fix)
  3    the server could not be reached, or did not answer in time
  4    not authorized (401/403): `labrun login`, or set LABRUN_TOKEN
  5    no such run (404)
  6    the server refused the request (409, 413, 415, 429, 503, 507, ...): its message says why
  7    pull: a copied file's sha256 differs from the server's (the message names the file)
  70   an unexpected error in labrun itself (LABRUN_DEBUG=1 shows the traceback)
  130  --wait/--follow: the run was cancelled; also Ctrl-C (the run goes on: `labrun cancel NAME`)
"""

WAIT_HELP = """\
with --wait or --follow, the exit status is the run's outcome:
  0 succeeded, 1 failed, 130 cancelled (also Ctrl-C, which stops waiting, not the run);
  other errors as in `labrun --help`
"""


# --- arguments ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 - a parser builder: a statement per option
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    # SUPPRESS: given before or after the command, whichever was given wins over the environment
    group.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the service (LABRUN_URL; default: `labrun login`'s, else {userconfig.DEFAULT_URL})",
    )
    group.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="API token (LABRUN_TOKEN; the variable keeps it out of `ps`)",
    )
    group.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds to wait for an answer (default 30)"
    )

    parser = argparse.ArgumentParser(
        prog="labrun",
        description=DESCRIPTION,
        epilog=EPILOG,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str,
        handler: Callable[..., int],
        help: str,
        epilog: str | None = None,
        **kw: Any,
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=epilog,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kw,
        )
        p.set_defaults(handler=handler)
        return p

    def json_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print the server's JSON instead (for scripts)")

    def priority_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--priority",
            choices=("high", "normal", "low"),
            help="its class (default normal): high needs an admin's allowance; low may be preempted, "
            "and resumes from its checkpoint",
        )

    def time_limit_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--time-limit",
            metavar="DURATION",
            type=_duration,
            help="its time limit (6h, 90m, 1h30m, 2d, or seconds), over all its attempts: near it, it saves a "
            "checkpoint and stops, resumable (default: the server's; at most your maximum)",
        )

    def chain_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--after",
            action="append",
            metavar="NAME[:ended]",
            help="wait for this run to succeed (:ended: to end, however) before starting; repeatable; "
            "sweep:NAME waits for a sweep (docs/run-chains.md)",
        )
        p.add_argument(
            "--init-from",
            metavar="RUN",
            help="start from this run's last checkpoint (its model weights): the init_from key, quoted",
        )

    def wait_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true", help="show a live progress bar until the run ends")
        p.add_argument(
            "--follow", action="store_true", help="stream the run's log until it ends (like --wait)"
        )
        p.add_argument(
            "--idempotency-key", metavar="KEY", help="repeating a key returns the first run, not a new one"
        )
        p.add_argument(
            "--interval", type=float, default=1.0, help="seconds between polls with --wait (default 1)"
        )
        p.add_argument("--json", action="store_true", help="print the run as JSON instead of its name")

    p = command(
        "submit",
        cmd_submit,
        "queue a run: Hydra overrides exactly as for `python -m trainer`; prints the run name",
        epilog=WAIT_HELP,
    )
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="e.g. model=fno data=32x64 +extra.key=1")
    p.add_argument("--config-name", metavar="NAME", help="top-level config in conf/ (default: the server's)")
    priority_option(p)
    time_limit_option(p)
    chain_options(p)
    wait_options(p)
    notify_cli.notify_option(p)

    p = command(
        "sweep",
        cmd_sweep,
        "queue a sweep: Hydra's multirun syntax (model=fno,sfno training.lr=range(...)), one run per "
        "combination, all validated first; prints the sweep's name",
        epilog="with --wait, the exit status is 0 when every run succeeded, 1 when one failed, 130 when "
        "one was cancelled",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="OVERRIDE", help="e.g. model=fno,sfno training.lr=1e-3,1e-4"
    )
    p.add_argument("--config-name", metavar="NAME", help="top-level config in conf/ (default: the server's)")
    p.add_argument(
        "--wait", action="store_true", help="print a line per run as it starts and ends, until all end"
    )
    p.add_argument("--idempotency-key", metavar="KEY", help="repeating a key returns the first sweep")
    notify_cli.notify_option(p)
    priority_option(p)
    time_limit_option(p)
    chain_options(p)
    p.add_argument(
        "--interval", type=float, default=1.0, help="seconds between polls with --wait (default 1)"
    )
    p.add_argument("--json", action="store_true", help="print the sweep as JSON instead of its name")

    p = command("ls", cmd_ls, "list runs, newest first")
    p.add_argument(
        "--status", metavar="S[,S...]", help="e.g. running,queued (queued running succeeded failed cancelled)"
    )
    p.add_argument("--owner", metavar="me|NAME", help="only this user's runs (`me`: the token's user)")
    p.add_argument("--limit", type=int, default=50, metavar="N", help="at most N runs (default 50)")
    p.add_argument("--before", type=int, metavar="S", help="the next page (the S that a long list ends with)")
    p.add_argument(
        "--where",
        action="append",
        metavar="KEY=VALUE",
        help="only runs asked this (repeatable: all must match); values compare as values: "
        "training.lr=1e-4 finds 0.0001; the server's default overrides count",
    )
    json_option(p)

    p = command("show", cmd_show, "one run: status, progress, metrics, timing, reason, log tail")
    p.add_argument("name", metavar="NAME")
    json_option(p)

    p = command("logs", cmd_logs, "print a run's log (stdout and stderr)")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing as it grows, until the run ends"
    )
    p.add_argument("--tail", type=int, metavar="N", help="only the last N lines")
    p.add_argument("--json", action="store_true", help="the text and its byte range as JSON (not with -f)")

    p = command("cancel", cmd_cancel, "cancel runs: a queued one leaves the queue, a running one is stopped")
    p.add_argument("names", nargs="+", metavar="NAME")

    p = command(
        "extend-stall",
        cmd_extend_stall,
        "a running run that makes no progress is not cancelled now: its stall clock starts again",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument(
        "--limit",
        type=float,
        metavar="S",
        help="its own stall limit from now on, in seconds (up to the server's)",
    )

    p = command(
        "resume",
        cmd_resume,
        "continue failed or cancelled runs (a time limit's too) from their last checkpoint, as their next "
        "attempt",
    )
    p.add_argument("names", nargs="+", metavar="NAME")
    time_limit_option(p)

    p = command(
        "time-limit",
        cmd_time_limit,
        "change a queued or running run's time limit: 8h (its new limit, over all its attempts), +2h (more "
        "time), or none (an admin: no limit)",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("limit", metavar="LIMIT", help="8h, +2h, 90m, seconds, or none")

    p = command(
        "rerun",
        cmd_rerun,
        "queue a new run with the same overrides and seed; prints its name",
        epilog=WAIT_HELP,
    )
    p.add_argument("name", metavar="NAME")
    wait_options(p)

    p = command("rm", cmd_rm, "delete finished runs' files (their records stay; names are never reused)")
    p.add_argument("names", nargs="+", metavar="NAME")

    p = command(
        "gpus",
        cmd_gpus,
        "who runs what on which GPU, CPU runs, and the queue; with an action, the processes outside labrun "
        "that the GPU guard lets be",
    )
    json_option(p)
    gpus_cli.add_actions(p, common)

    p = command(
        "usage",
        cmd_usage,
        "disk space (what runs take, what is free, the largest runs) and your GPU-hour budget",
    )
    json_option(p)

    p = command("notify", notify_cli.cmd_notify, "notifications of your runs' ends: your destinations")
    notify_cli.add_actions(p, common)

    p = command(
        "diff",
        cmd_diff,
        "runs side by side: the overrides and resolved config keys that differ, final metrics, durations",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="two runs or more (up to 20)")
    json_option(p)

    pull_cli.add_command(command)
    account_cli.add_commands(command)
    reserve_cli.add_commands(command)
    completion.add_command(command)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `labrun submit model=fno --wait data=32x64`: overrides after an option come back as extras, in order
    if extra and args.command in ("submit", "sweep") and not any(x.startswith("-") for x in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "logs" and args.json and args.follow:
        parser.error("logs: --json and --follow do not go together")
    return args


# --- commands -------------------------------------------------------------------------------------------


def cmd_submit(client: Client, args: argparse.Namespace) -> int:
    run, replayed = client.submit(
        _with_init_from(args),
        args.config_name,
        args.idempotency_key,
        notify_cli.events_of(args),
        args.priority,
        args.time_limit,
        _after(args.after),
    )
    return _created(client, run, replayed, args)


def _after(values: list[str] | None) -> list[dict[str, str]] | None:
    """``--after NAME[:ended]`` (``sweep:NAME[:ended]`` for a sweep) as the request's ``after``."""
    if not values:
        return None
    entries = []
    for value in values:
        kind, rest = ("sweep", value[len("sweep:") :]) if value.startswith("sweep:") else ("run", value)
        name, _, when = rest.rpartition(":") if rest.endswith((":ended", ":succeeded")) else (rest, "", "")
        if not name:
            raise CliError(f"--after {value!r}: name a run (NAME, NAME:ended, sweep:NAME)", EXIT_INVALID)
        entries.append({kind: name, "when": when or "succeeded"})
    return entries


def _with_init_from(args: argparse.Namespace) -> list[str]:
    """The overrides, with ``--init-from RUN`` as the init_from line (quoted: run names hold = and ,)."""
    if not args.init_from:
        return list(args.overrides)
    return [*args.overrides, f"init_from='{args.init_from}'"]


def cmd_rerun(client: Client, args: argparse.Namespace) -> int:
    run, replayed = client.rerun(args.name, args.idempotency_key)
    return _created(client, run, replayed, args)


def _created(client: Client, run: dict[str, Any], replayed: bool, args: argparse.Namespace) -> int:
    if replayed:
        _note(f"this idempotency key was used before: {run['name']} is that run, not a new one")
    waiting = args.wait or args.follow
    if not (args.json and waiting):  # with --json --wait, only the final state is printed
        _print_json(run) if args.json else print(run["name"], flush=True)
    if not waiting:
        return EXIT_OK
    final = _wait(client, run, args.follow, args.interval)
    if args.json:
        _print_json(final)
    return EXIT_STATUS_BY_RUN[final["status"]]


def _wait(client: Client, run: dict[str, Any], follow: bool, interval: float) -> dict[str, Any]:
    """Until the run ends: its log (``follow``) or a progress bar on stderr; then its outcome, one line."""
    name = run["name"]
    view = None
    try:
        if follow:
            try:
                _copy(client.follow(name))
            except CliError as exc:
                if exc.exit_code != EXIT_UNREACHABLE:
                    raise
                _note(f"the log stream broke ({exc.message}); waiting for the run to end")
            run = _poll(client, name)  # the stream also ends when the server shuts down
        else:
            view = render.ProgressView(name)
        while True:
            if view is not None:
                view.update(run)
            if run["status"] in TERMINAL:
                break
            time.sleep(interval)
            run = _poll(client, name)
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting; {name} goes on (`labrun cancel {name}` stops it)", EXIT_CANCELLED
        ) from None
    finally:
        if view is not None:
            view.close()
    print(render.outcome(run), file=sys.stderr)
    if run["status"] == "failed" and run.get("log_tail") and not follow:
        print(render.safe(run["log_tail"].rstrip("\n")), file=sys.stderr)
    return run


def _poll(client: Client, name: str, get: Callable[[str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """GET the run (or ``get(name)``); an unreachable server (a restart) is retried for a while before it
    is an error."""
    deadline = None
    while True:
        try:
            return (get or client.run)(name)
        except CliError as exc:
            if exc.exit_code != EXIT_UNREACHABLE:
                raise
            if deadline is None:
                deadline = time.monotonic() + UNREACHABLE_PATIENCE_S
                _note(f"{exc.message}; retrying for {UNREACHABLE_PATIENCE_S:.0f} s")
            elif time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def cmd_sweep(client: Client, args: argparse.Namespace) -> int:
    sweep, replayed = client.submit_sweep(
        _with_init_from(args),
        args.config_name,
        args.idempotency_key,
        notify_cli.events_of(args),
        args.priority,
        args.time_limit,
        _after(args.after),
    )
    if replayed:
        _note(f"this idempotency key was used before: {sweep['name']} is that sweep, not a new one")
    if not (args.json and args.wait):
        _print_json(sweep) if args.json else print(sweep["name"], flush=True)
    _note(f"{sweep['size']} runs queued in {sweep['run_dir']}")
    if not args.wait:
        return EXIT_OK
    seen: dict[str, str] = {}
    try:
        while True:
            for run in sweep["runs"]:  # one line per run whenever its status changes
                if seen.get(run["name"]) != run["status"]:
                    seen[run["name"]] = run["status"]
                    _note(render.sweep_run_line(run, sweep["size"]))
            if sweep["finished"]:
                break
            time.sleep(args.interval)
            sweep = _poll(client, sweep["name"], client.sweep)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; {sweep['name']} goes on", EXIT_CANCELLED) from None
    _note(render.sweep_outcome(sweep))
    if args.json:
        _print_json(sweep)
    counts = sweep["counts"]
    return EXIT_RUN_FAILED if counts["failed"] else EXIT_CANCELLED if counts["cancelled"] else EXIT_OK


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit must be at least 1", EXIT_INVALID)
    answer = client.runs(args.status, args.owner, args.limit, args.before, args.where)
    if args.json:
        _print_json(answer)
    else:
        render.runs_table(answer.get("data", []), answer.get("count"), answer.get("next_before"))
    return EXIT_OK


def cmd_diff(client: Client, args: argparse.Namespace) -> int:
    if len(args.names) < 2:
        raise CliError("diff needs two runs at least: labrun diff A B", EXIT_INVALID)
    answer = client.compare(args.names)
    if args.json:
        _print_json(answer)
    else:
        from labrun.compare_view import comparison  # rich and the table: only when drawn

        comparison(answer)
    return EXIT_OK


def cmd_show(client: Client, args: argparse.Namespace) -> int:
    run = client.run(args.name)
    _print_json(run) if args.json else render.run_details(run)
    return EXIT_OK


def cmd_logs(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        _copy(client.follow(args.name, args.tail))
        return EXIT_OK
    text, headers = client.logs(args.name, args.tail)
    truncated = headers.get("x-log-truncated") == "true"
    if args.json:
        _print_json(
            {
                "name": args.name,
                "text": text,
                "start": int(headers.get("x-log-start", 0)),
                "end": int(headers.get("x-log-end", len(text))),
                "size": int(headers.get("x-log-size", len(text))),
                "truncated": truncated,
            }
        )
        return EXIT_OK
    sys.stdout.write(text)
    sys.stdout.flush()
    if truncated and args.tail is None:
        _note(
            f"the log's first {headers.get('x-log-start')} bytes are left out (it is long); --tail N for less"
        )
    return EXIT_OK


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    def cancel(name: str) -> str:
        run = client.cancel(name)
        # The answer is normally final; a run caught starting may still say running for a moment.
        deadline = time.monotonic() + CANCEL_SETTLE_S
        while run["status"] not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.2)
            run = client.run(name)
        if run["status"] not in TERMINAL:
            return f"{name}: cancel requested (still {run['status']})"
        return f"{name}: {run['status']}"

    return _each(args.names, cancel)


def cmd_extend_stall(client: Client, args: argparse.Namespace) -> int:
    def extend(name: str) -> str:
        run = client.extend_stall(name, args.limit)
        limit = f" (stall limit {render.number(run['stall_after_s'])} s)" if run.get("stall_after_s") else ""
        return f"{name}: extended{limit}"

    return _each(args.names, extend)


def cmd_resume(client: Client, args: argparse.Namespace) -> int:
    def resume(name: str) -> str:
        run = client.resume(name, args.time_limit)
        limit = render.time_limit_text(run)
        return f"{name}: queued as attempt {run.get('attempts')}" + (f", time limit {limit}" if limit else "")

    return _each(args.names, resume)


def cmd_time_limit(client: Client, args: argparse.Namespace) -> int:
    text = args.limit.strip()
    change: dict[str, Any]
    if text.lower() == "none":
        change = {"no_limit": True}
    elif text.startswith("+"):
        change = {"extend_by": _duration(text[1:])}
    else:
        change = {"time_limit": _duration(text)}
    run = client.set_time_limit(args.name, change)
    limit = render.time_limit_text(run)
    print(f"{args.name}: " + (f"time limit {limit}" if limit else "no time limit"))
    return EXIT_OK


def _duration(text: str) -> str:
    """A duration as typed, checked here (the server reads the same text): a clear error before any request."""
    try:
        parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    def delete(name: str) -> str:
        before = client.run(name)  # what it takes: the record says 0 once its files are gone
        if before.get("deleted_at"):
            return f"{name}: already deleted"
        client.delete(name)
        freed = before.get("disk_bytes")
        return f"{name}: deleted" + (f" ({render.size(freed)} freed)" if freed else "")

    return _each(args.names, delete)


def _each(names: list[str], action: Callable[[str], str]) -> int:
    """Every name is tried; the exit status is the first error's (0 if none)."""
    status = EXIT_OK
    for name in names:
        try:
            print(action(name), flush=True)
        except CliError as exc:
            print(f"labrun: {render.safe(exc.message)}", file=sys.stderr, flush=True)
            status = status or exc.exit_code
    return status


def cmd_gpus(client: Client, args: argparse.Namespace) -> int:
    if getattr(args, "gpus_handler", None) is not None:  # labrun gpus ignore|ignores|unignore
        code: int = args.gpus_handler(client, args)
        return code
    health = client.health()
    runs = client.runs("running,queued", limit=1000).get("data", [])
    view = render.gpu_map(health, runs)
    _print_json(view) if args.json else render.gpus_view(view)
    return EXIT_OK


def cmd_usage(client: Client, args: argparse.Namespace) -> int:
    usage = client.usage()
    mine = client.my_usage()
    if args.json:
        _print_json({**usage, "budgets": mine.get("budgets", [])})
    else:
        render.usage_view(usage)
        render.budgets_view(mine)
    return EXIT_OK


# --- plumbing -------------------------------------------------------------------------------------------


def _copy(chunks: Iterable[str]) -> None:
    for chunk in chunks:
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _note(text: str) -> None:
    print(f"labrun: {render.safe(text)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    client = None
    try:
        creds = userconfig.resolve(getattr(args, "url", None), getattr(args, "token", None))
        timeout = getattr(args, "timeout", 30.0)
        if getattr(args, "local", None):  # login, logout, completion: they make their own client, if any
            local: int = args.local(args, creds, timeout)
            return local
        client = Client(creds.url, creds.token, timeout=timeout, token_from=creds.token_from)
        code: int = args.handler(client, args)
        return code
    except userconfig.ConfigFileError as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except CliError as exc:
        print(f"labrun: {render.safe(exc.message)}", file=sys.stderr)  # it may quote a run's text
        return exc.exit_code
    except KeyboardInterrupt:
        print("labrun: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except BrokenPipeError:  # `labrun ls | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as exc:
        if os.environ.get("LABRUN_DEBUG"):
            raise
        print(
            f"labrun: unexpected error: {type(exc).__name__}: {exc} (LABRUN_DEBUG=1 shows more)",
            file=sys.stderr,
        )
        return EXIT_BUG
    finally:
        if client is not None:
            client.close()
