"""The documentation's generated pages, made from the code so that they cannot drift from it:

    python -m app.docs_tables            # (make docs-tables) rewrite every page below
    python -m app.docs_tables --check    # exit 1 naming each page that differs from what the code says

- ``docs/reference/settings.md``: every ``LABRUN_*`` setting of the service (``Settings``,
  app/core/config.py) and of its engines (``DockerSettings``, ``SlurmSettings``), with its default, the
  values it accepts and its meaning (the field's ``description=``, else the comment on or above it);
- ``docs/reference/experiment-keys.md``: every key a run may set (``trainer/schema_docs.py``);
- ``docs/reference/cli.md``: the ``labrun`` commands, their options and exit statuses, from its parser;
- ``docs/api/openapi.json`` and ``docs/reference/http-api.md``: the OpenAPI document ``create_app()``
  serves at ``/openapi.json``, and its endpoints as a table.

``tests/docs/test_generated_pages.py`` fails when a committed page and the code disagree. Imports neither
torch nor the trainer's training code: only what the service itself imports.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import functools
import inspect
import io
import json
import os
import sys
import tempfile
import textwrap
import tokenize
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
COMMAND = "python -m app.docs_tables"


def _header(source: str) -> str:
    return (
        f"<!-- Generated from {source} by `{COMMAND}` (make docs-tables): edit the code, not this page. -->\n"
    )


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# --- settings -----------------------------------------------------------------------------------------------


def _comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class's source: the one on its own lines, else the block just above."""
    source = textwrap.dedent(inspect.getsource(cls))
    by_line: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            by_line[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    found: dict[str, str] = {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        end = node.end_lineno or node.lineno
        own = [by_line[n] for n in range(node.lineno, end + 1) if n in by_line]
        above: list[str] = []
        n = node.lineno - 1
        while n in by_line and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, by_line[n])
            n -= 1
        text = " ".join(own or above)
        if text:
            found[node.target.id] = text
    return found


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | tuple):
        if not value:
            return "empty"
        value = " ".join(str(v) for v in value)
    if isinstance(value, Path) and not value.is_absolute():
        value = f"./{value}"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{str(value).replace(sys.executable, '<python>')}`"


def _allowed(field: FieldInfo) -> str:
    words: list[str] = []
    if get_origin(field.annotation) is Literal:
        words.append("one of " + ", ".join(str(a) for a in get_args(field.annotation)))
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    for item in field.metadata:
        for attr, sign in signs.items():
            bound = getattr(item, attr, None)
            if bound is not None:
                words.append(f"{sign} {bound}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            words.append(f"matches `{pattern}`")
    return ", ".join(words)


def settings_rows(cls: type[BaseSettings]) -> list[tuple[str, str, str, str]]:
    """(variable, default, allowed, meaning) per field, in the class's order; meaning "" when undocumented."""
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    comments = _comments(cls)
    rows = []
    for name, field in cls.model_fields.items():
        meaning = field.description or comments.get(name, "")
        rows.append((f"{prefix}{name.upper()}", _default(field), _allowed(field), meaning))
    return rows


def _settings_table(cls: type[BaseSettings]) -> str:
    lines = ["| variable | default | allowed | meaning |", "| --- | --- | --- | --- |"]
    for variable, default, allowed, meaning in settings_rows(cls):
        lines.append(f"| `{variable}` | {_cell(default)} | {_cell(allowed)} | {_cell(meaning)} |")
    return "\n".join(lines) + "\n"


def engine_settings() -> list[type[BaseSettings]]:
    from app.launchers.docker import DockerSettings
    from app.launchers.slurm import SlurmSettings

    return [DockerSettings, SlurmSettings]


def settings_page() -> str:
    from app.core.config import Settings

    docker, slurm = engine_settings()
    return (
        _header("app/core/config.py, app/launchers/docker.py and app/launchers/slurm.py") + "# Settings\n\n"
        "Every setting is an environment variable, read once when the service starts; an invalid one stops "
        "`python -m app` at once with a message naming each bad variable (exit status 2). `<python>` is "
        "the Python that runs the service. See [Configuration](../configuration.md) for how to set them.\n\n"
        "## The service\n\n" + _settings_table(Settings) + "\n## Docker (`LABRUN_LAUNCHER=docker`)\n\n"
        "Read only when the Docker launcher is chosen; see [The GPU box](../gpu-box.md).\n\n"
        + _settings_table(docker)
        + "\n## Slurm (`LABRUN_LAUNCHER=slurm`)\n\n"
        "Read only when the Slurm launcher is chosen; see [Slurm](../slurm.md).\n\n" + _settings_table(slurm)
    )


# --- the experiment's keys ------------------------------------------------------------------------------


def keys_page() -> str:
    from trainer import schema_docs

    return (
        _header("trainer/schema.py (trainer/schema_docs.py)") + "# The experiment's keys\n\n"
        "Every key a run may set, its type, default (as written in `conf/`) and allowed values. The same "
        "rows are served as `GET /config/schema`. A value outside these is refused at submission (422) and "
        "by `python -m trainer` (exit status 2) with the same message. See "
        "[The experiment](../experiment.md).\n\n" + schema_docs.markdown_table(schema_docs.describe())
    )


# --- the command line -----------------------------------------------------------------------------------


def _epilog_section(epilog: str, title: str) -> list[tuple[str, str]]:
    """The ``title:`` block of an argparse epilog as (term, text) pairs; indented lines continue the text."""
    rows: list[tuple[str, str]] = []
    inside = False
    for line in epilog.splitlines():
        if not line.strip():
            inside = False
        elif not line.startswith(" "):
            inside = line.strip() == f"{title}:"
        elif inside:
            term, _, text = line.strip().partition(" ")
            if line.startswith("    ") and rows:  # deeper indentation: the previous row goes on
                rows[-1] = (rows[-1][0], f"{rows[-1][1]} {line.strip()}")
            else:
                rows.append((term, text.strip()))
    return rows


def _option_rows(parser: argparse.ArgumentParser, skip: set[str]) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction) or skip & set(
            action.option_strings
        ):
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            flag = ", ".join(f"`{o}{metavar}`" for o in action.option_strings)
        else:
            flag = f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("*", "+") else "")
        text = (action.help or "") % {"default": action.default} if action.help else ""
        rows.append(f"| {flag} | {_cell(text)} |")
    return rows


def _action_sections(prefix: str, command: argparse.ArgumentParser, common: set[str]) -> list[str]:
    """A command's own actions (``labrun gpus ignore``, ``labrun notify add``), one section each."""
    out: list[str] = []
    for nested in (a for a in command._actions if isinstance(a, argparse._SubParsersAction)):
        for name, action in nested.choices.items():
            out.append(f"#### `{prefix} {name}`\n")
            out.append(f"{_cell(action.description or '')}\n")
            rows = _option_rows(action, common)
            if rows:
                out += ["| argument | meaning |", "| --- | --- |", *rows, ""]
    return out


def cli_page() -> str:
    from labrun.cli import EPILOG, build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    common = {s for a in parser._actions for s in a.option_strings}
    out = [_header("labrun/cli.py (its argument parser)"), "# `labrun` reference\n"]
    out.append("Options every command takes (before or after the command):\n")
    out += ["| option | meaning |", "| --- | --- |", *_option_rows(parser, {"-h"}), ""]
    out += ["## Commands\n"]
    for name, command in sub.choices.items():
        out.append(f"### `labrun {name}`\n")
        out.append(f"{_cell(command.description or '')}\n")
        rows = _option_rows(command, common)
        if rows:
            out += ["| argument | meaning |", "| --- | --- |", *rows, ""]
        if command.epilog:
            out.append(f"```text\n{command.epilog.rstrip()}\n```\n")
        out += _action_sections(f"labrun {name}", command, common)
    out += ["## Environment\n", "| variable | meaning |", "| --- | --- |"]
    out += [f"| `{term}` | {_cell(text)} |" for term, text in _epilog_section(EPILOG, "environment")]
    out += ["", "## Exit status\n", "| status | meaning |", "| --- | --- |"]
    out += [f"| {term} | {_cell(text)} |" for term, text in _epilog_section(EPILOG, "exit status")]
    return "\n".join(out) + "\n"


# --- the HTTP API ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _bare_environment() -> Iterator[None]:
    """No LABRUN_* variable of the caller's (LABRUN_CONF_DIR, a setting) shapes a generated page."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LABRUN_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


@functools.cache  # two pages read it; building the service takes a second
def openapi_document() -> dict[str, Any]:
    """What the service serves at /openapi.json, from a service built on an empty output directory."""
    from app.core.config import load_settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as tmp, _bare_environment():
        app = create_app(load_settings(output_dir=Path(tmp), gpus=(), launcher="local"))
        try:
            return app.openapi()
        finally:
            app.state.manager.launcher.close()
            app.state.manager.store.close()


def openapi_json() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n"


def api_page() -> str:
    document = openapi_document()
    out = [_header("the service's OpenAPI document (app/api/routes/)"), "# HTTP endpoints\n"]
    out.append(
        "Every endpoint the service serves, from its OpenAPI document ([openapi.json](../api/openapi.json), "
        "the same as the running service's `/openapi.json`; interactive at `/docs` on the service). "
        'Bodies and answers are JSON unless said otherwise; errors are `{"detail": "..."}`.\n'
    )
    out += ["| method | path | what it does | parameters | answers |", "| --- | --- | --- | --- | --- |"]
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            what = (op.get("description") or op.get("summary") or "").strip().split("\n\n")[0]
            params = ", ".join(
                f"`{p['name']}`" + ("" if p.get("in") == "query" else f" ({p['in']})")
                for p in op.get("parameters", [])
                if p.get("in") != "header"
            )
            if "requestBody" in op:
                params = ", ".join(x for x in ("JSON body", params) if x)
            answers = ", ".join(sorted(op.get("responses", {})))
            out.append(
                f"| {method.upper()} | `{path}` | {_cell(' '.join(what.split()))} | {params} | {answers} |"
            )
    return "\n".join(out) + "\n"


# --- all of them ----------------------------------------------------------------------------------------

PAGES: dict[str, Callable[[], str]] = {
    "reference/settings.md": settings_page,
    "reference/experiment-keys.md": keys_page,
    "reference/cli.md": cli_page,
    "reference/http-api.md": api_page,
    "api/openapi.json": openapi_json,
}


def stale_pages(docs: Path = DOCS) -> list[str]:
    """The generated pages whose committed text is not what the code makes now."""
    stale = []
    with _bare_environment():
        for relative, make in PAGES.items():
            path = docs / relative
            if not path.is_file() or path.read_text() != make():
                stale.append(relative)
    return stale


def write_pages(docs: Path = DOCS) -> list[str]:
    written = []
    with _bare_environment():
        for relative, make in PAGES.items():
            path = docs / relative
            text = make()
            if not path.is_file() or path.read_text() != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                written.append(relative)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=COMMAND, description="Regenerate the documentation's generated pages.")
    ap.add_argument("--check", action="store_true", help="only say which pages are out of date (exit 1)")
    args = ap.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for relative in stale:
            print(f"docs/{relative} is out of date: run {COMMAND} (make docs-tables)", file=sys.stderr)
        return 1 if stale else 0
    for relative in write_pages():
        print(f"wrote docs/{relative}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
