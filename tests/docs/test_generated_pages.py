"""The documentation's generated pages are what the code says now: the settings, the experiment's keys,
the command line and the HTTP API (``python -m app.docs_tables`` writes them; this test only compares)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import docs_tables
from app.core.config import Settings


def test_committed_pages_are_what_the_code_makes():
    stale = docs_tables.stale_pages()
    assert not stale, (
        f"out of date: {', '.join('docs/' + p for p in stale)}; regenerate them with "
        f"`{docs_tables.COMMAND}` (make docs-tables) and commit the result"
    )


@pytest.mark.parametrize("cls", [Settings, *docs_tables.engine_settings()], ids=lambda c: c.__name__)
def test_every_setting_says_what_it_means(cls):
    undocumented = [variable for variable, _, _, meaning in docs_tables.settings_rows(cls) if not meaning]
    assert not undocumented, (
        f"{', '.join(undocumented)}: no meaning for the settings page; give the field a description= "
        f"(or a comment on or just above it) in {cls.__module__}, then run `{docs_tables.COMMAND}`"
    )


def test_every_service_setting_is_on_the_settings_page():
    page = (docs_tables.DOCS / "reference" / "settings.md").read_text()
    for name, field in Settings.model_fields.items():
        assert f"| `LABRUN_{name.upper()}` |" in page
        assert str(field.description).split("(")[0].strip() in page


def test_a_page_that_differs_from_the_code_is_named(tmp_path: Path):
    assert docs_tables.write_pages(tmp_path) == list(docs_tables.PAGES)
    assert docs_tables.stale_pages(tmp_path) == []
    settings = tmp_path / "reference" / "settings.md"
    settings.write_text(settings.read_text().replace("LABRUN_MAX_CPU_RUNS", "LABRUN_MAX_CPUS"))
    (tmp_path / "reference" / "cli.md").unlink()
    assert docs_tables.stale_pages(tmp_path) == ["reference/settings.md", "reference/cli.md"]


def test_the_command_line_page_lists_every_command_and_exit_status():
    from labrun.cli import build_parser
    from labrun.client import EXIT_AUTH, EXIT_CANCELLED, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_UNREACHABLE

    page = docs_tables.cli_page()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for name in commands:
        assert f"### `labrun {name}`" in page
    for code in (EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_CANCELLED):
        assert f"\n| {code} | " in page


def test_the_openapi_document_is_the_services_own():
    document = docs_tables.openapi_document()
    assert document["info"]["title"] == "labrun"
    assert {"/runs", "/runs/{name}", "/healthz", "/sweeps"} <= set(document["paths"])
    page = docs_tables.api_page()
    assert "| POST | `/runs` |" in page
