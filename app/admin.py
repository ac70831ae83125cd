"""``python -m app users ...``: manage users on the server (inside Compose: ``docker compose exec api python
-m app users ...``). Writes the same store the running service reads; no running service is needed.

    users add NAME [--admin]     create a user; prints their token once
    users list                   names, admin, active, limits
    users token NAME             a new token (the old one stops working); prints it once
    users revoke NAME            the token stops working at once
    users limits NAME [--max-gpus N] [--max-queued N] [--max-run-time S] [--stall-after S] [--high-gpus N]
                [--gpu-hours H] [--cpu-hours H]
                      [--clear]
    users grant NAME [--gpu-hours H] [--max-window S] [--ahead S] [--clear]   a user's grant of reservations
"""

from __future__ import annotations

import argparse
import sys

from app.core.config import SettingsError, load_settings
from app.errors import LabrunError, NotFound
from app.reservations import Grant
from app.statedir import StateDir
from app.store import RunStore, StoreVersionError
from app.users import Users


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m app users", description="Manage labrun's users and tokens.")
    sub = ap.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="create a user; prints their token once")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="may cancel anyone's runs and set limits")
    sub.add_parser("list", help="users, admins, limits")
    for name, text in (
        ("token", "a new token for the user (the old one stops working)"),
        ("revoke", "revoke"),
    ):
        sub.add_parser(name, help=text).add_argument("name")
    limits = sub.add_parser("limits", help="a user's own limits (unset ones follow the server's)")
    limits.add_argument("name")
    limits.add_argument("--max-gpus", type=int, help="GPUs in use at once (0: no limit)")
    limits.add_argument("--max-queued", type=int, help="runs queued at once (0: no limit)")
    limits.add_argument(
        "--max-run-time", type=float, help="the longest time limit a run may have left, in seconds (0: none)"
    )
    limits.add_argument(
        "--stall-after",
        type=float,
        help="seconds without progress or output before a run is stalled (0: never)",
    )
    limits.add_argument(
        "--high-gpus",
        type=int,
        help="GPUs their high-priority runs may hold at once (0: no high-priority runs; docs/priorities.md)",
    )
    limits.add_argument(
        "--gpu-hours",
        type=float,
        help="GPU-hours per budget window before their runs start as low (0: no budget; "
        "docs/budgets-and-estimates.md)",
    )
    limits.add_argument(
        "--cpu-hours", type=float, help="CPU run-hours per budget window before their CPU runs start as low"
    )
    limits.add_argument("--clear", action="store_true", help="back to the server's limits")
    grant = sub.add_parser("grant", help="a user's own grant of reservations (docs/reservations.md)")
    grant.add_argument("name")
    grant.add_argument("--gpu-hours", type=float, help="GPU-hours one reservation may hold (0: none)")
    grant.add_argument("--max-window", type=float, metavar="S", help="seconds the longest window lasts")
    grant.add_argument(
        "--ahead", type=float, metavar="S", help="seconds ahead a window may start at the latest"
    )
    grant.add_argument("--clear", action="store_true", help="back to the server's grant")
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        store = RunStore(StateDir(settings.output_dir).db)
    except (SettingsError, StoreVersionError, OSError) as exc:
        print(f"labrun: {exc}", file=sys.stderr)
        return 2
    users = Users(store)
    try:
        if args.command == "add":
            token = users.add(args.name, admin=args.admin)
            _token_out(args.name, token, "created" + (" (admin)" if args.admin else ""))
        elif args.command == "token":
            _token_out(args.name, users.rotate(args.name), "has a new token; the old one no longer works")
        elif args.command == "revoke":
            users.revoke(args.name)
            print(f"{args.name}: revoked; their token no longer works (a new one: users token {args.name})")
        elif args.command == "limits":
            _limits(users, args)
        elif args.command == "grant":
            _grant(store, users, args)
        else:
            for u in users.list():
                state = "active" if u.active else "revoked"
                role = "admin" if u.is_admin else "user"
                print(
                    f"{u.name}\t{role}\t{state}\tmax_gpus={u.max_gpus} max_queued={u.max_queued} max_run_s={u.max_run_s}"
                )
    except LabrunError as exc:
        print(f"labrun: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        store.close()
    return 0


def _limits(users: Users, args: argparse.Namespace) -> None:
    user = users.set_limits(args.name, args.max_gpus, args.max_queued, args.max_run_time, args.clear)
    if args.stall_after is not None or args.clear:
        user = users.set_stall_after(args.name, None if args.clear else args.stall_after)
    if args.high_gpus is not None or args.clear:
        user = users.set_high_gpus(args.name, None if args.clear else args.high_gpus)
    if args.gpu_hours is not None or args.cpu_hours is not None or args.clear:
        user = users.set_budgets(args.name, args.gpu_hours, args.cpu_hours, args.clear)
    print(
        f"{user.name}: max_gpus={user.max_gpus} max_queued={user.max_queued} max_run_s={user.max_run_s}"
        f" high_gpus={user.high_gpus} budget_gpu_hours={user.budget_gpu_hours}"
        f" budget_cpu_hours={user.budget_cpu_hours}"
    )


def _grant(store: RunStore, users: Users, args: argparse.Namespace) -> None:
    if users.get(args.name) is None:
        raise NotFound(f"no user named {args.name!r}; create one with: users add {args.name}")
    own = store.reservations.grant(args.name) or Grant()
    if args.clear:
        own = Grant()
    own = Grant(
        args.gpu_hours if args.gpu_hours is not None else own.gpu_hours,
        args.max_window if args.max_window is not None else own.max_window_s,
        args.ahead if args.ahead is not None else own.ahead_s,
    )
    store.reservations.set_grant(args.name, own)
    print(f"{args.name}: gpu_hours={own.gpu_hours} max_window_s={own.max_window_s} ahead_s={own.ahead_s}")


def _token_out(name: str, token: str, what: str) -> None:
    print(f"{name}: {what}. Their token (shown this once; labrun keeps only its hash):", file=sys.stderr)
    print(token)  # alone on stdout, for scripts: TOKEN=$(python -m app users add alice)
