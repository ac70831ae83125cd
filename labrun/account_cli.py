"""``labrun login``, ``labrun whoami``, ``labrun logout``: the server and token kept in the user's
configuration file (``labrun/userconfig.py``), checked against the server's ``GET /me`` before they are kept.

The token is read from standard input when that is not a terminal (``labrun login < token.txt``, a secret
store piped in), else asked for without echo; it is never an argument (arguments show in ``ps``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable

from labrun import userconfig
from labrun.client import EXIT_AUTH, EXIT_INVALID, EXIT_OK, Client, CliError


def add_commands(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "login",
        cmd_login,
        "keep a server's URL and your token in your config file (the token from stdin, or asked for)",
        epilog="the file: $XDG_CONFIG_HOME/labrun/config.json (~/.config/labrun/config.json without the "
        "variable), readable by you alone; --url/--token and LABRUN_URL/LABRUN_TOKEN still win over it",
    )
    p.add_argument(
        "server", nargs="?", metavar="URL", help="the service (default: --url, LABRUN_URL or the last one)"
    )
    p.set_defaults(local=cmd_login)
    p = command(
        "whoami", cmd_whoami, "who the server says you are, on which server, and where the token came from"
    )
    p.set_defaults(local=cmd_whoami)
    p = command("logout", cmd_logout, "forget the token kept for a server (the server itself is not told)")
    p.add_argument("server", nargs="?", metavar="URL", help="the service (default: the one commands talk to)")
    p.set_defaults(local=cmd_logout)


def _read_token(url: str) -> str:
    if sys.stdin is None or not sys.stdin.isatty():
        return (sys.stdin.readline() if sys.stdin else "").strip()
    return getpass.getpass(
        f"token for {url} (hidden; an admin makes one with `python -m app users add NAME`): "
    ).strip()


def cmd_login(args: argparse.Namespace, creds: userconfig.Credentials, timeout: float) -> int:
    url = userconfig.normal_url(args.server or creds.url)
    if not url.startswith(("http://", "https://")):
        raise CliError(f"{url!r} is not a server URL; give one like http://gpu-box:8000", EXIT_INVALID)
    token = getattr(args, "token", None) or _read_token(url)
    client = Client(url, token or None, timeout=timeout, token_from="this login")
    try:
        me = client.me()  # a wrong token, a wrong URL: an error now, not at the next command
    finally:
        client.close()
    if me.get("auth_required") and not token:
        raise CliError(f"{url} needs a token; none was given", EXIT_AUTH)
    path = userconfig.remember(url, token or None, str(me.get("name")))
    admin = " (admin)" if me.get("admin") else ""
    print(f"logged in to {url} as {me.get('name')}{admin}; kept in {path}", file=sys.stderr)
    return EXIT_OK


def cmd_whoami(_args: argparse.Namespace, creds: userconfig.Credentials, timeout: float) -> int:
    client = Client(creds.url, creds.token, timeout=timeout, token_from=creds.token_from)
    try:
        me = client.me()
    finally:
        client.close()
    admin = " (admin)" if me.get("admin") else ""
    how = f"token from {creds.token_from}" if me.get("auth_required") else "this server asks for no token"
    print(f"{me.get('name')}{admin} on {creds.url} ({how}; URL from {creds.url_from})")
    return EXIT_OK


def cmd_logout(args: argparse.Namespace, creds: userconfig.Credentials, _timeout: float) -> int:
    url = userconfig.normal_url(args.server or creds.url)
    if userconfig.forget(url):
        print(f"logged out of {url}: its token is gone from {userconfig.config_path()}", file=sys.stderr)
    else:
        print(f"no token was kept for {url}", file=sys.stderr)
    return EXIT_OK
