"""A fuzzer that reads the API's own OpenAPI document: every GET route, every query and path parameter,
edge values (huge and negative numbers, empty and long strings, non-numbers, unicode). Nothing answers
5xx: every bound a handler relies on is in the schema, so a bad value is a 422 (or a 404), never an
internal error (a page cursor past SQLite's integer range was one)."""

from __future__ import annotations

from urllib.parse import quote

from service_process import submit, wait_for
from web_helpers import run_for

EDGES = [
    "",
    "0",
    "-1",
    "1",
    "9" * 35,
    "-" + "9" * 35,
    str(2**63),
    str(2**63 - 1),
    "1e309",
    "-0",
    "0.5",
    "nan",
    "inf",
    "x",
    "x" * 5000,
    "é✓‮ 日本\u0000",
    "%",
    "../../etc/passwd",
    "true",
    "null",
]


def test_no_get_route_answers_5xx_to_edge_values(client) -> None:
    run = wait_for(client, submit(client, *run_for(0.5))["name"])
    sweep = client.post("/sweeps", json={"overrides": ["seed=1,2"]}).json()["name"]
    spec = client.get("/openapi.json").json()
    failures, tried = [], 0
    for path, operations in spec["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        params = [p for p in get.get("parameters", []) if p["in"] in ("query", "path")]
        base = {
            p["name"]: (sweep if path.startswith("/sweeps") else run["name"])
            for p in params
            if p["in"] == "path"
        }
        for param in params:
            for value in EDGES:
                values = {**base, param["name"]: value}
                url = path
                for name, v in values.items():
                    if "{" + name + "}" in url:
                        url = url.replace("{" + name + "}", quote(v, safe="") or "%20")
                query = {} if param["in"] == "path" else {param["name"]: value}
                response = client.get(url, params=query)
                tried += 1
                if response.status_code >= 500:
                    failures.append(
                        f"GET {url[:80]} {str(query)[:80]}: {response.status_code} {response.text[:120]}"
                    )
    assert tried > 100
    assert not failures, "\n".join(failures)
