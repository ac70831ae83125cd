"""``python -m app gpus ...``: tell the GPU guard what to let be, on the server (inside Compose: ``docker
compose exec api python -m app gpus ...``). Writes the store the running service reads; its guard takes it
at its next look (within one interval). No running service is needed.

    gpus ignore --pid PID [--note TEXT]        let one process be (that process only)
    gpus ignore --command PATTERN [--note ..]  let every process whose command matches be (*jupyter*)
    gpus ignores                               the rules, with their ids
    gpus unignore ID                           undo a rule
    gpus map UNIX_USER LABRUN_USER             their processes' GPU time outside the queue counts
                                               toward LABRUN_USER's fair share
    gpus unmap UNIX_USER
    gpus maps                                  the Unix users mapped
"""

from __future__ import annotations

import argparse
import sys

from app.core.config import SettingsError, load_settings
from app.errors import LabrunError
from app.gpus import admin
from app.statedir import StateDir
from app.store import RunStore, StoreVersionError


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m app gpus", description="Tell labrun's GPU guard what to let be."
    )
    sub = ap.add_subparsers(dest="command", required=True)
    ignore = sub.add_parser("ignore", help="let a process be: it no longer keeps its GPU from labrun's runs")
    which = ignore.add_mutually_exclusive_group(required=True)
    which.add_argument("--pid", type=int, help="that process only (a later process with its pid is not)")
    which.add_argument(
        "--command", dest="pattern", metavar="PATTERN", help="every process whose command matches (*jupyter*)"
    )
    ignore.add_argument("--note", help="why (shown with the rule)")
    sub.add_parser("ignores", help="the ignore rules, with their ids")
    sub.add_parser("unignore", help="undo an ignore rule").add_argument("id", type=int)
    mapping = sub.add_parser("map", help="count a Unix user's GPU time outside the queue for a labrun user")
    mapping.add_argument("unix_user")
    mapping.add_argument("labrun_user")
    sub.add_parser("unmap", help="stop counting a Unix user's GPU time").add_argument("unix_user")
    sub.add_parser("maps", help="the Unix users mapped to labrun users")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "map" and not admin.UNIX_USER.match(args.unix_user):
        print(f"labrun: {args.unix_user!r} is not a Unix user name", file=sys.stderr)
        return 2
    try:
        store = RunStore(StateDir(load_settings().output_dir).db)
    except (SettingsError, StoreVersionError, OSError) as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return 2
    try:
        _run(store, args)
    except LabrunError as exc:
        print(f"labrun: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def _run(store: RunStore, args: argparse.Namespace) -> None:
    if args.command == "ignore":
        if args.pid is not None:
            rule = admin.ignore_pid(store, args.pid, args.note, "admin")
        else:
            rule = admin.ignore_pattern(store, args.pattern, args.note, "admin")
        print(f"ignore rule {rule.id}: {admin.describe(rule)} (undo: python -m app gpus unignore {rule.id})")
    elif args.command == "ignores":
        for rule in store.gpus.ignores():
            print(f"{rule.id}\t{admin.describe(rule)}")
    elif args.command == "unignore":
        admin.unignore(store, args.id)
        print(f"ignore rule {args.id} removed")
    elif args.command == "map":
        admin.map_unix_user(store, args.unix_user, args.labrun_user)
        print(
            f"{args.unix_user} -> {args.labrun_user}: their GPU time outside the queue counts for {args.labrun_user}"
        )
    elif args.command == "unmap":
        admin.unmap_unix_user(store, args.unix_user)
        print(f"{args.unix_user}: no longer counted")
    else:
        for unix_user, owner in store.gpus.unix_users().items():
            print(f"{unix_user}\t{owner}")
