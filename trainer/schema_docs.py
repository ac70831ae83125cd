"""The config's documentation, made from its schema (``trainer/schema.py``): every key a run may set, with
its type, default, allowed values and description. ``GET /config/schema`` serves ``describe()``; the
documentation's table of keys (docs/reference/experiment-keys.md) is ``markdown_table(describe())``
(``python -m app.docs_tables`` writes it, ``tests/docs/`` keeps it equal to the schema).

Apart from the schema because it composes the default config (``trainer/config.py``) to show the defaults,
and the config imports the schema: this way the imports point one way, schema <- config <- schema_docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf

from trainer import config
from trainer.schema import FIELDS, GROUPS, TypeWords, allowed, field_of, show, spell_type


def describe(
    defaults: Mapping[str, Any] | None = None, groups: Mapping[str, list[str]] | None = None
) -> list[dict[str, Any]]:
    """Every key (dotted) with its type, default, allowed values and description, from the schema; the
    group choices (``model``, ``data``, ...) first. ``default`` is the value in ``conf/`` (the default
    config, interpolations shown as written); ``derived`` keys are computed from others.
    ``defaults``/``groups`` default to those of the default config in ``trainer.config.conf_dir()``."""
    if defaults is None or groups is None:
        found_defaults, found_groups = _conf_defaults()
        defaults = found_defaults if defaults is None else defaults
        groups = found_groups if groups is None else groups
    rows = [
        {
            "key": group,
            "type": "group",
            "default": defaults.get(group),
            "allowed": "one of " + ", ".join(options),
            "description": f"config group: one of conf/{group}/*.yaml (sets the {group}.* keys below)",
            "derived": False,
        }
        for group, options in groups.items()
    ]
    for f in FIELDS:
        rows.append(
            {
                "key": f.key,
                "type": type_name(f.type, f.metadata),
                "default": defaults.get(f.key),
                "allowed": allowed(f.metadata),
                "description": f.metadata.get("help", ""),
                "derived": bool(f.metadata.get("derived")),
            }
        )
    return rows


def type_name(hint: Any, meta: Mapping[str, Any]) -> str:
    """A field's type as the table shows it: ``int``, ``list[int]``, ``str | null``."""
    return spell_type(hint, meta, _IN_CODE)


_IN_CODE = TypeWords(
    optional=lambda inner: f"{inner} | null",
    list_of=lambda inner: f"list[{inner}]",
    plain=lambda hint: getattr(hint, "__name__", str(hint)),
)


def _conf_defaults() -> tuple[dict[str, Any], dict[str, list[str]]]:
    """(dotted key -> value of the default config, unresolved; group -> options), from conf/."""
    cfg = config.compose_config([])
    choices = cfg.hydra.runtime.choices
    groups = {g: config.group_options(g) for g in GROUPS}
    values: dict[str, Any] = {g: choices.get(g) for g in GROUPS}
    tree: dict[str, Any] = OmegaConf.to_container(cfg, resolve=False)  # type: ignore[assignment]
    tree.pop("hydra", None)

    def flatten(node: dict[str, Any], prefix: str) -> None:
        for name, value in node.items():
            if isinstance(value, dict) and field_of(f"{prefix}{name}") is None:  # a mapping field is one key
                flatten(value, f"{prefix}{name}.")
            else:
                values[prefix + name] = value

    flatten(tree, "")
    return values, groups


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """``describe()``'s rows as the documentation's Markdown table (derived keys left out: nobody sets them)."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| key | type | default | allowed | description |", "| --- | --- | --- | --- | --- |"]
    for row in rows:
        if row.get("derived"):
            continue
        shown = f"`{show(row['default'])}`"
        lines.append(
            f"| `{row['key']}` | {cell(row['type'])} | {cell(shown)} | {cell(row['allowed'])} | "
            f"{cell(row['description'])} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m trainer.schema_docs: the table of keys
    print(markdown_table(describe()), end="")
