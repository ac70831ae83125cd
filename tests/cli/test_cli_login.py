"""``labrun login`` / ``whoami`` / ``logout`` and shell completion, against a real service process with auth
on (two users made with ``python -m app users add``): the token checked before it is kept, kept in a file
that only its user may read, used by later commands, beaten by --token/LABRUN_TOKEN, and never sent to
another server."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import FAKE_TRAINER, cli_env, fake, labrun_command, one_line
from service_process import ROOT, ServiceProcess


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, dict[str, str]]]:
    output_dir: Path = tmp_path_factory.mktemp("login") / "outputs"
    output_dir.mkdir()
    svc = ServiceProcess(output_dir, FAKE_TRAINER, LABRUN_MAX_CPU_RUNS="2")
    tokens = {}
    for name, extra in (("alice", ["--admin"]), ("bob", [])):
        tokens[name] = svc.admin("users", "add", name, *extra)
    svc.start()
    yield svc, tokens
    svc.stop()


def cli(home: Path, *args: str, stdin: str = "", url: str | None = None, **env: str):
    """``labrun ARGS`` with ``home`` as XDG_CONFIG_HOME, ``stdin`` piped in, and no LABRUN_URL unless given."""
    environment = cli_env(url, XDG_CONFIG_HOME=str(home), **env)
    return subprocess.run(
        labrun_command(*args),
        cwd=ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_login_keeps_a_checked_token_readable_by_its_user_alone(authed, tmp_path):
    svc, tokens = authed
    home = tmp_path / "config"

    wrong = cli(home, "login", svc.url, stdin="not-a-token\n")
    assert wrong.returncode == 4
    assert "refused the token from this login" in one_line(wrong.stderr)
    assert not (home / "labrun" / "config.json").exists()  # nothing kept from a failed login

    done = cli(home, "login", svc.url + "/", stdin=tokens["bob"] + "\n")
    assert done.returncode == 0, done.stderr
    assert f"logged in to {svc.url} as bob" in done.stderr
    path = home / "labrun" / "config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert tokens["bob"] in path.read_text()

    # Later commands need neither LABRUN_URL nor LABRUN_TOKEN.
    who = cli(home, "whoami")
    assert who.returncode == 0, who.stderr
    assert who.stdout.strip() == f"bob on {svc.url} (token from the config file; URL from the config file)"
    submitted = cli(home, "submit", *fake(sleep=0))
    assert submitted.returncode == 0, submitted.stderr
    run = svc.http.get(
        f"/runs/{submitted.stdout.strip()}", headers={"Authorization": f"Bearer {tokens['bob']}"}
    )
    assert run.json()["owner"] == "bob"

    # The environment and flags still win over the file.
    who = cli(home, "whoami", LABRUN_TOKEN=tokens["alice"])
    assert who.stdout.strip().startswith("alice (admin) on")
    assert "token from LABRUN_TOKEN" in who.stdout
    who = cli(home, "--token", tokens["alice"], "whoami", LABRUN_TOKEN=tokens["bob"])
    assert "token from --token" in who.stdout

    # Another server named by --url gets no token from the file (it was kept for this one).
    other = cli(home, "--url", svc.url.replace("127.0.0.1", "localhost"), "whoami")
    assert other.returncode == 4
    assert "needs a token" in one_line(other.stderr)

    # A re-login keeps the file's mode; logout forgets the token, and the next command asks for one.
    assert cli(home, "login", stdin=tokens["alice"]).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out = cli(home, "logout")
    assert out.returncode == 0
    assert f"logged out of {svc.url}" in out.stderr
    assert tokens["alice"] not in path.read_text()
    after = cli(home, "whoami", url=svc.url)
    assert after.returncode == 4
    assert "`labrun login`" in one_line(after.stderr)
    assert "no token was kept" in cli(home, "logout", url=svc.url).stderr


def test_login_refuses_a_url_that_is_not_one_and_a_damaged_file(tmp_path):
    home = tmp_path / "config"
    bad = cli(home, "login", "gpu-box:8000", stdin="x")
    assert bad.returncode == 2
    assert "give one like http://" in one_line(bad.stderr)
    (home / "labrun").mkdir(parents=True)
    (home / "labrun" / "config.json").write_text("{not json")
    damaged = cli(home, "ls")
    assert damaged.returncode == 2
    assert "config.json" in one_line(damaged.stderr)
    assert "labrun login" in damaged.stderr


def bash_complete(home: Path, line: str, url: str | None = None, **env: str) -> list[str]:
    """What bash's Tab offers for ``line`` (the last word is the one being completed), with the script
    that ``labrun completion bash`` prints; ``labrun`` on the PATH is this checkout's."""
    script = cli(home, "completion", "bash").stdout
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "labrun"
    shim.write_text(f'#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m labrun "$@"\n')
    shim.chmod(0o755)
    words = line.split(" ")
    program = (
        f"{script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
        '_labrun; printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    environment = cli_env(url, XDG_CONFIG_HOME=str(home), **env)
    environment["PATH"] = f"{bin_dir}{os.pathsep}{environment['PATH']}"
    result = subprocess.run(
        ["bash", "-c", program], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [w for w in result.stdout.splitlines() if w]


def test_bash_completes_commands_options_and_run_names(authed, tmp_path):
    svc, tokens = authed
    home = tmp_path / "config"
    assert set(bash_complete(home, "labrun lo")) == {"logs", "login", "logout"}
    assert "--status" in bash_complete(home, "labrun ls --st")
    assert bash_complete(home, "labrun --url x sh") == ["show"]  # an option's value is not a command
    run = svc.http.post(
        "/runs", json={"overrides": fake(sleep=0)}, headers={"Authorization": f"Bearer {tokens['bob']}"}
    ).json()
    assert bash_complete(home, "labrun show ", url=svc.url) == []  # no token: nothing, and no error
    offered = bash_complete(home, "labrun show ", url=svc.url, LABRUN_TOKEN=tokens["bob"])
    assert run["name"] in offered
    assert bash_complete(home, "labrun completion z") == ["zsh"]


def test_completion_scripts_name_every_command_and_a_dead_server_answers_nothing(tmp_path):
    home = tmp_path / "config"
    for shell in ("bash", "zsh", "fish"):
        result = cli(home, "completion", shell)
        assert result.returncode == 0, result.stderr
        for command in ("submit", "ls", "show", "login", "whoami", "logout", "completion"):
            assert command in result.stdout
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = cli(home, "completion", "--runs", url=dead)
    assert result.returncode == 0
    assert result.stdout.strip() == ""
    assert result.stderr == ""
    assert cli(home, "completion").returncode == 2
