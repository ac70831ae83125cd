"""``labrun notify``: your notification destinations (add, ls, test, rm, events), and ``--notify`` of
``labrun submit`` / ``labrun sweep``.

``labrun notify add`` reads the URL from standard input, or from a hidden prompt at a terminal, when it is
not given as an argument: a URL often holds a secret (a token, a password) that should not sit in the
shell's history or in ``ps``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from labrun.client import EXIT_INVALID, EXIT_OK, EXIT_REFUSED, Client, CliError

EVENTS_HELP = (
    "succeeded, failed, cancelled, sweep_finished, preempted, resumed (comma-separated), all, or none"
)


def notify_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--notify",
        metavar="EVENTS",
        help=f"events to be notified of for this submission: {EVENTS_HELP} "
        "(default: yours, `labrun notify events`)",
    )


def events_of(args: argparse.Namespace) -> list[str] | None:
    value = getattr(args, "notify", None)
    if value is None:
        return None
    return [e.strip() for e in value.split(",") if e.strip() and e.strip() != "none"]


def add_actions(p: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="notify_action", metavar="ACTION", required=True)

    def action(name: str, handler: object, help: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help, description=help, parents=[common])
        a.set_defaults(notify_handler=handler)
        return a

    a = action(
        "add",
        cmd_add,
        "add a destination: an Apprise URL (mailto://, slack://, ...) or a signed "
        "webhook (labrun+https://host/path); prints its id (and a webhook's signing secret, once)",
    )
    a.add_argument(
        "url", nargs="?", metavar="URL", help="omitted: read from standard input or a hidden prompt"
    )
    a.add_argument(
        "--events",
        metavar="EVENTS",
        help="only these of the events your choices send reach it (default: all of them)",
    )
    server_option(a)
    a = action("filter", cmd_filter, "set which events reach one destination (all: every one)")
    a.add_argument("id", type=int, metavar="ID")
    a.add_argument("events", metavar="EVENTS", help=f"{EVENTS_HELP}; for --server: gpu_busy_outside, ...")
    server_option(a)
    a = action("ls", cmd_ls, "your destinations (secrets masked), their state and last error")
    a.add_argument("--json", action="store_true", help="print the server's JSON instead")
    server_option(a)
    a = action("test", cmd_test, "send a test message to a destination now (a paused one resumes)")
    a.add_argument("id", type=int, metavar="ID")
    server_option(a)
    a = action("rm", cmd_rm, "remove destinations")
    a.add_argument("ids", nargs="+", type=int, metavar="ID")
    server_option(a)
    a = action("events", cmd_events, "show, or set, the events your runs send by default")
    a.add_argument("events", nargs="?", metavar="EVENTS", help=EVENTS_HELP)


def server_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        action="store_true",
        help="the server-wide destinations of the server's own events (a GPU busy outside labrun, the "
        "disk low, the engine down) instead of yours; admins only",
    )


def cmd_notify(client: Client, args: argparse.Namespace) -> int:
    code: int = args.notify_handler(client, args)
    return code


def cmd_add(client: Client, args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        url = getpass.getpass("destination URL: ") if sys.stdin.isatty() else sys.stdin.readline()
    url = url.strip()
    if not url:
        raise CliError("no URL given (as an argument, on standard input, or at the prompt)", EXIT_INVALID)
    events = None if args.events is None else _events(args.events)
    added = client.notify_add(url, server=args.server, events=events)
    print(added["id"])
    print(f"labrun: added {added['label']} ({added['kind']})", file=sys.stderr)
    if added.get("signing_secret"):
        print(
            f"labrun: its signing secret, shown this once: {added['signing_secret']}\n"
            "labrun: check X-Labrun-Signature with it (docs: notifications)",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_filter(client: Client, args: argparse.Namespace) -> int:
    events = None if args.events.strip() == "all" else _events(args.events)
    found = client.notify_filter(args.id, events, server=args.server)
    chosen = found["events"]
    print("all" if chosen is None else ",".join(chosen) or "none")
    return EXIT_OK


def _events(value: str) -> list[str]:
    return [e.strip() for e in value.split(",") if e.strip() and e.strip() != "none"]


def cmd_ls(client: Client, args: argparse.Namespace) -> int:
    answer = client.notify_destinations(server=args.server)
    if args.json:
        print(json.dumps(answer, indent=2))
        return EXIT_OK
    if not answer["data"]:
        more = " --server" if args.server else ""
        print(f"no destinations; add one with `labrun notify add{more}`", file=sys.stderr)
    for d in answer["data"]:
        line = f"{d['id']:>4}  {d['state']:<7} {d['kind']:<8} {d['label']}"
        if d.get("events") is not None:
            line += f"  (only: {','.join(d['events']) or 'none'})"
        if d.get("last_error"):
            line += f"\n      last error ({d['failures']} in a row): {d['last_error']}"
        print(line)
    return EXIT_OK


def cmd_test(client: Client, args: argparse.Namespace) -> int:
    result = client.notify_test(args.id, server=args.server)
    if result["ok"]:
        print(f"labrun: destination {args.id} got the test message", file=sys.stderr)
        return EXIT_OK
    raise CliError(f"destination {args.id} did not get the test message: {result['error']}", EXIT_REFUSED)


def cmd_rm(client: Client, args: argparse.Namespace) -> int:
    for id in args.ids:
        client.notify_remove(id, server=args.server)
        print(f"labrun: removed destination {id}", file=sys.stderr)
    return EXIT_OK


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    events = None if args.events is None else [e for e in args.events.split(",") if e]
    print(",".join(client.notify_events(events)["events"]) or "none")
    return EXIT_OK
