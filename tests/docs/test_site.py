"""The documentation site builds with ``mkdocs build --strict`` (a broken link or anchor, a missing page, a
page left out of the nav all fail), and what it builds loads nothing from the internet: no web fonts, no
scripts, styles or images from elsewhere, so it reads on a machine without internet access."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# An attribute or CSS that makes the browser fetch: src=, a <link href>, url(...), @import.
FETCHES = re.compile(
    r"""(?:\bsrc\s*=\s*["']?|<link\b[^>]*\bhref\s*=\s*["']?|url\(\s*["']?|@import\s+["']?)(https?:)?//""",
    re.I,
)
FONT_HOSTS = ("fonts.googleapis.com", "fonts.gstatic.com", "use.typekit.net", "fonts.bunny.net")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed (make docs):\n{done.stdout}{done.stderr}"
    return out


def test_every_page_of_the_nav_is_built(site: Path):
    pages = sorted(p.relative_to(ROOT / "docs") for p in (ROOT / "docs").rglob("*.md"))
    assert pages
    for page in pages:
        assert (site / page.with_suffix(".html")).is_file(), page
    assert (site / "api" / "openapi.json").is_file()


def test_the_built_site_fetches_nothing_from_elsewhere(site: Path):
    offenders = []
    for path in site.rglob("*"):
        if path.suffix not in (".html", ".css", ".js", ".json", ".xml"):
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(site)}: {host}" for host in FONT_HOSTS if host in text]
        if path.suffix in (".html", ".css"):
            offenders += [f"{path.relative_to(site)}: {m.group(0)}" for m in FETCHES.finditer(text)]
    assert not offenders, "the site would load from the internet:\n" + "\n".join(offenders)


def test_the_architecture_page_names_the_file_of_each_step(site: Path):
    page = (ROOT / "docs" / "architecture.md").read_text()
    steps = [
        "app/api/routes/runs.py",
        "app/validation.py",
        "trainer/plan.py",
        "app/lifecycle/admission.py",
        "app/store/runs.py",
        "app/lifecycle/dispatch.py",
        "app/launchers/base.py",
        "app/launchers/local.py",
        "app/launchers/docker.py",
        "app/launchers/slurm.py",
        "app/lifecycle/supervision.py",
    ]
    for step in steps:
        assert f"`{step}`" in page, step
        assert (ROOT / step).is_file(), f"the architecture page names {step}, which does not exist"
    assert "Architecture" in (site / "architecture.html").read_text()


def test_the_readme_is_short_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 200
    assert "make run" in readme
    assert "make test" in readme
    links = re.findall(r"\]\(((?!https?:|#)[^)]+)\)", readme)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (ROOT / link.split("#")[0]).exists(), f"README.md links to {link}, which does not exist"


@pytest.mark.parametrize(
    "text",
    [
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        '<script src="https://unpkg.com/mermaid/dist/mermaid.min.js"></script>',
        "body { background: url(//cdn.example.org/x.png) }",
        '@import "https://example.org/style.css";',
    ],
)
def test_the_check_sees_a_fetch(text: str):
    assert FETCHES.search(text)


def test_a_link_to_elsewhere_is_no_fetch():
    assert not FETCHES.search('<a href="https://example.org/">a page elsewhere</a> <img src="assets/x.png">')
