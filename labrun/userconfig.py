"""Where ``labrun`` finds its server and token, and the file ``labrun login`` keeps them in.

Order, first found wins: ``--url``/``--token``, then ``LABRUN_URL``/``LABRUN_TOKEN``, then the user's
configuration file, then the default URL. The file keeps one token per server and the server last logged in
to; a token is only ever sent to the server it was stored for (``--url`` elsewhere sends none from the file).

The file is ``$XDG_CONFIG_HOME/labrun/config.json`` (``~/.config/labrun/config.json`` without the variable),
JSON (the standard library writes it; no package is imported for it), mode 0600 in a folder of mode 0700: it
holds tokens. It is written to a temporary file first and renamed, so a crash never leaves half of one.
Standard library only: every command reads it, and ``labrun --help`` must start fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labrun.client import DEFAULT_URL

__all__ = [
    "DEFAULT_URL",
    "ConfigFileError",
    "Credentials",
    "config_path",
    "forget",
    "load",
    "remember",
    "resolve",
]


class ConfigFileError(Exception):
    """The configuration file cannot be read or written; the message names it and the fix."""


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str | None
    token_from: str  # "--token", "LABRUN_TOKEN", "the config file" or "" (no token)
    url_from: str  # "--url", "LABRUN_URL", "the config file" or "the default"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labrun" / "config.json"


def normal_url(url: str) -> str:
    """A server's key in the file: without the trailing slash that makes no difference to it."""
    return url.strip().rstrip("/")


def load() -> dict[str, Any]:
    """The file's content; an empty one when there is no file. A damaged file is an error naming it."""
    path = config_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigFileError(
            f"cannot read {path} ({exc}); fix it or remove it and run `labrun login` again"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("servers", {}), dict):
        raise ConfigFileError(f"{path} is not a labrun configuration; remove it and run `labrun login`")
    return data


def save(data: dict[str, Any]) -> Path:
    """Write the file readable by its user alone (folder 0700, file 0600), atomically."""
    path = config_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)  # an existing folder too: it lists which servers one has tokens for
        import tempfile  # only when writing: every command reads this module at start

        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # mkstemp makes it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        raise ConfigFileError(f"cannot write {path}: {exc}") from None
    return path


def remember(url: str, token: str | None, user: str) -> Path:
    """``labrun login``: keep the token for ``url`` and make ``url`` the server commands talk to."""
    data = load()
    key = normal_url(url)
    servers = data.setdefault("servers", {})
    servers[key] = {"token": token, "user": user} if token else {"user": user}
    data["url"] = key
    return save(data)


def forget(url: str) -> bool:
    """``labrun logout``: drop the token kept for ``url``; whether there was one."""
    data = load()
    key = normal_url(url)
    had = data.get("servers", {}).pop(key, None) is not None
    if data.get("url") == key:
        data.pop("url")
    if had:
        save(data)
    return had


def resolve(flag_url: str | None, flag_token: str | None) -> Credentials:
    """The server and token a command uses (the order in the module's docstring)."""
    data = load()
    env_url = os.environ.get("LABRUN_URL")
    if flag_url:
        url, url_from = flag_url, "--url"
    elif env_url:
        url, url_from = env_url, "LABRUN_URL"
    elif data.get("url"):
        url, url_from = str(data["url"]), "the config file"
    else:
        url, url_from = DEFAULT_URL, "the default"
    env_token = os.environ.get("LABRUN_TOKEN")
    stored = data.get("servers", {}).get(normal_url(url), {})
    if flag_token:
        return Credentials(url, flag_token, "--token", url_from)
    if env_token:
        return Credentials(url, env_token, "LABRUN_TOKEN", url_from)
    if isinstance(stored, dict) and stored.get("token"):
        return Credentials(url, str(stored["token"]), "the config file", url_from)
    return Credentials(url, None, "", url_from)
