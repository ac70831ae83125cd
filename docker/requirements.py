"""Print the requirements an image installs, read from pyproject.toml (the single source of truth).

    python requirements.py service|trainer|all [pyproject.toml]

``service``: the service's dependencies (no torch). ``trainer``: the experiment's (the trainer imports
Hydra and OmegaConf from the base list, the training stack from the ``trainer`` extra). ``all``: both, for
a wheelhouse that serves both images. Versions come from constraints.txt at install time.
"""

import sys
import tomllib

SERVICE_ONLY = {"fastapi", "uvicorn", "pydantic", "pydantic-settings", "docker"}


def main() -> None:
    which = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else "pyproject.toml"
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    base = list(project["dependencies"])
    trainer = list(project["optional-dependencies"]["trainer"])
    if which == "service":
        reqs = base
    elif which == "trainer":
        reqs = [r for r in base if _name(r) not in SERVICE_ONLY] + trainer
    elif which == "all":
        reqs = base + trainer
    else:
        raise SystemExit(f"unknown set {which!r}: service, trainer or all")
    print("\n".join(reqs))


def _name(requirement: str) -> str:
    for sep in "[=<>!~; ":
        requirement = requirement.split(sep, 1)[0]
    return requirement.lower()


if __name__ == "__main__":
    main()
