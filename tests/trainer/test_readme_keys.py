"""The README's table of config keys is the schema's own description (no second hand-written list)."""

from __future__ import annotations

import re
from pathlib import Path

from trainer import schema_docs

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_lists_every_key_as_the_schema_describes_it():
    block = re.search(
        r"<!-- config-keys:start -->\n(.*?)\n<!-- config-keys:end -->", README.read_text(), re.S
    )
    assert block, "README.md lost its <!-- config-keys:start/end --> markers"
    assert block.group(1) == schema_docs.markdown_table(schema_docs.describe()).rstrip("\n"), (
        "README.md's key table is out of date: regenerate it with python -m trainer.schema_docs"
    )
