"""/runs: submit, look up, list, read logs, cancel, rerun, delete. Thin: reads go to the store and the run
files, changes to the RunManager, once each; ``RunView`` (``app/api/view.py``) turns records into answers.
Every route needs a caller (``app/api/auth.py``, required on the router); anyone may read any run, only its
owner or an admin may change it.

Reads (GET) are async and read SQLite and progress.json directly on the event loop: both are
microsecond-scale, cheaper than a hop to the thread pool. Anything that composes a config (POST), reads a
big file (logs) or waits on a process (cancel) runs in the thread pool.
"""

from __future__ import annotations

import asyncio
import codecs
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app import compare, override_values, runcode
from app.api.auth import TOKEN_RECHECK_S, CallerDep, token_check
from app.api.compare_public import ComparedRun, RunsCompared, difference_public, duration
from app.api.deps import (
    BeforeQuery,
    CreationDep,
    FilesDep,
    ManagerDep,
    OwnerQuery,
    StoreDep,
    ViewDep,
    get_run,
)
from app.api.public import (
    AfterState,
    ResumeRequest,
    RunCreate,
    RunPublic,
    RunsPublic,
    StallExtension,
    TimeLimitChange,
)
from app.api.routes.notify import NotifyDep
from app.api.view import RunView
from app.errors import InvalidRun
from app.lifecycle import dependencies
from app.lifecycle.timelimits import running_time
from app.metrics import time_submission
from app.models import RunRecord, RunStatus
from app.notify.events import parse_events
from app.runfiles import LOG_WINDOW_BYTES, LogSlice, RunFiles, read_range, read_tail
from app.store import RunStore

router = APIRouter(prefix="/runs", tags=["runs"])
FOLLOW_INTERVAL_S = 0.25
MAX_LOG_LINES = 100_000
FOLLOW_CHUNK_BYTES = 1 << 20
LOG_SLICE_BYTES = 256 << 10


@router.post("", status_code=201, response_model=RunPublic, dependencies=[Depends(time_submission)])
async def submit_run(
    body: RunCreate, new: CreationDep, manager: ManagerDep, view: ViewDep, notify: NotifyDep
) -> RunPublic:
    """Validate the overrides (422 naming the override and the fix), fix the run's name, queue it as the
    caller's run (429 past their limit of queued runs, 507 when the disk is full)."""
    events = parse_events(body.notify) if body.notify is not None else None
    record, replayed = await run_in_threadpool(
        manager.submit,
        body.overrides,
        body.config_name,
        new.idempotency_key,
        None,
        new.caller.name,
        body.stall_after_s,
        body.priority,
        body.time_limit,
        body.after_entries(),
    )
    notify.choose(record.name, events)
    new.created("runs", record.name, replayed)
    return view.one(record)


@router.get("", response_model=RunsPublic)
@router.head("", include_in_schema=False)  # its own route: one id per operation in the OpenAPI document
async def list_runs(
    store: StoreDep,
    view: ViewDep,
    caller: CallerDep,
    status: Annotated[list[str] | None, Query(description="e.g. queued, or running,queued")] = None,
    owner: OwnerQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: BeforeQuery = None,
    override: Annotated[
        list[str] | None,
        Query(
            description="KEY=VALUE, repeatable: only runs asked all of them (their own overrides or the "
            "server's defaults they got), values compared as values: training.lr=1e-4 finds 0.0001"
        ),
    ] = None,
) -> Response:
    """Runs, newest first, ``limit`` at a time; ``count`` is how many match in all."""
    # A page takes a few milliseconds of CPU without awaiting anything: yield once first, so that under
    # many connections each gets its turn (without it, p99 was several times p50 in bench/service_bench.py).
    await asyncio.sleep(0)
    owner = caller.name if owner == "me" else owner
    asked = override_values.filters(override) if override else []
    return _json(view.page_json(store, _statuses(status or []), limit, before, owner, asked))


@router.get("/compare", response_model=RunsCompared)
async def compare_runs(
    store: StoreDep,
    view: ViewDep,
    files: FilesDep,
    name: Annotated[
        list[str] | None,
        Query(description="a run's name, repeated for each run (2 to 20; names are never split on commas)"),
    ] = None,
) -> RunsCompared:
    """Runs side by side: the overrides and resolved config keys that differ, the final metrics and the
    duration of each (docs/finding-runs.md)."""
    names = list(dict.fromkeys(name or []))
    if not compare.MIN_RUNS <= len(names) <= compare.MAX_RUNS:
        raise InvalidRun(
            f"compare takes {compare.MIN_RUNS} to {compare.MAX_RUNS} different runs, got {len(names)}: "
            "repeat name=, e.g. /runs/compare?name=A&name=B"
        )
    records = [get_run(store, n) for n in names]
    return await run_in_threadpool(_compared, records, view, files)


def _compared(records: list[RunRecord], view: RunView, files: RunFiles) -> RunsCompared:
    """Reads each run's config file (off the event loop) and lines the runs up."""
    configs = [compare.read_config(files.output_dir, r.run_dir) for r in records]
    runs = [view.one(r) for r in records]
    asked = [compare.asked_values(r.overrides, r.default_overrides) for r in records]
    read = [c for c in configs if c is not None]
    config_diff = compare.differences(read) if len(read) >= compare.MIN_RUNS else []
    if read and len(read) < len(configs):  # the keys' values line up with the runs asked, null where none
        config_diff = _spread(config_diff, [c is not None for c in configs])
    return RunsCompared(
        names=[r.name for r in records],
        runs=[
            ComparedRun(run=p, duration_s=duration(r), config_found=c is not None)
            for r, p, c in zip(records, runs, configs, strict=True)
        ],
        overrides=difference_public(compare.differences(asked)),
        config=difference_public(config_diff),
        metrics=difference_public(_all_metrics([p.metrics for p in runs])),
    )


def _spread(found: list[compare.Difference], has: list[bool]) -> list[compare.Difference]:
    out = []
    for d in found:
        values, present = iter(d.values), iter(d.present)
        out.append(
            compare.Difference(
                d.key,
                [next(values) if h else None for h in has],
                [next(present) if h else False for h in has],
            )
        )
    return out


def _all_metrics(per_run: list[dict[str, Any]]) -> list[compare.Difference]:
    keys = sorted({k for m in per_run for k in m})
    return [compare.Difference(k, [m.get(k) for m in per_run], [k in m for m in per_run]) for k in keys]


def _statuses(values: list[str]) -> list[RunStatus]:
    names = [s.strip() for part in values for s in part.split(",") if s.strip()]
    known = {s.value: s for s in RunStatus}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InvalidRun(f"unknown status {unknown[0]!r}; use one of: {', '.join(known)}")
    return [known[n] for n in names]


@router.get("/{name}", response_model=RunPublic)
async def read_run(name: str, store: StoreDep, view: ViewDep, files: FilesDep) -> Response:
    """A rerun's answer also says whether its code differs from the original's (``app/runcode.py``); a run
    that waits for others, the state of each (docs/run-chains.md)."""
    record = get_run(store, name)
    original = store.get(record.rerun_of) if record.rerun_of else None
    update: dict[str, Any] = {}
    if record.after:
        deps = dependencies.of_record(record.after)
        update["after"] = [AfterState(**s) for s in dependencies.states(store, deps)]
    if original is not None and record.started_at is not None:
        update["code_differs"] = await run_in_threadpool(
            runcode.code_differs, files.output_dir, record.run_dir, original.run_dir
        )
    if not update:
        return _json(view.one_json(record))
    return _json(view.one(record).model_copy(update=update).model_dump_json().encode())


def _json(body: bytes) -> Response:
    """The polling paths answer with JSON the view made (returned as a model, FastAPI would validate it
    again against ``response_model``: a third of the time of a 50-run page)."""
    return Response(body, media_type="application/json")


@router.delete("/{name}", response_model=RunPublic)
async def delete_run(name: str, caller: CallerDep, manager: ManagerDep, view: ViewDep) -> RunPublic:
    """Delete a finished run's files (run directory, log); its record stays, marked deleted, and its name
    is never reused. 409 while it is queued or running; only its owner or an admin may."""
    caller.check_may_change(get_run(manager.store, name), "delete")
    return view.one(await run_in_threadpool(manager.delete, name, caller.name))


@router.get("/{name}/logs", response_class=PlainTextResponse)
async def run_logs(
    name: str,
    request: Request,
    store: StoreDep,
    files: FilesDep,
    manager: ManagerDep,
    tail: Annotated[int | None, Query(ge=0, le=MAX_LOG_LINES, description="only the last N lines")] = None,
    offset: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="a page of the log from this byte on")
    ] = None,
    length: Annotated[
        int, Query(ge=1, le=LOG_WINDOW_BYTES, description="bytes in a page")
    ] = LOG_WINDOW_BYTES,
    follow: Annotated[bool, Query(description="stream until the run ends")] = False,
    cut: Annotated[
        int | None,
        Query(ge=0, le=2**63 - 1, description="with offset: the X-Log-Cut-Bytes that came with that offset"),
    ] = None,
) -> Response:
    """The run's stdout+stderr as text: the end of it (at most 4 MiB, from a line start), ``tail`` lines, or
    a page from ``offset``. Headers say which bytes came: ``X-Log-Start``/``X-Log-End`` of ``X-Log-Size``,
    and ``X-Log-Truncated: true`` when earlier bytes were left out (ask again with ``offset=0``).

    A log longer than its bound (``LABRUN_MAX_LOG_BYTES``) keeps its beginning and its end, with a marker
    line at ``X-Log-Cut-At`` where ``X-Log-Cut-Bytes`` bytes of output were cut (0: none). Offsets are
    positions in the file as kept; the end moves down at each further cut, so a client paging on passes
    back the ``X-Log-Cut-Bytes`` it had with its offset (``cut=``): the page then starts where those bytes
    are now, and ``X-Log-Skipped`` says how many bytes after them were cut in between. ``follow`` does so
    itself, and says so in the stream."""
    get_run(store, name)  # 404 for an unknown run
    path = files.log_path(name)
    if follow:  # the stream goes on from where the tail ends: no line lost
        part = await run_in_threadpool(read_tail, path, tail)
        follower = _follow(store, path, name, part, manager.closing, token_check(request))
        return StreamingResponse(follower, media_type="text/plain", headers=_log_headers(part))
    # A big log is read (and made valid UTF-8) off the event loop: other requests do not wait for it.
    part, body = await run_in_threadpool(_read_log, path, tail, offset, length, cut)
    return _text(body, _log_headers(part))


def _read_log(
    path: Path, tail: int | None, offset: int | None, length: int, cut: int | None
) -> tuple[LogSlice, bytes]:
    part = read_range(path, offset, length, then_cut=cut) if offset is not None else read_tail(path, tail)
    return part, part.utf8()


def _text(body: bytes, headers: dict[str, str]) -> Response:
    """A big answer goes out in slices, each written when the socket has taken the last: written whole,
    megabytes would be copied into the transport's buffer and drained by the event loop in one go, while
    every other request waits."""
    media_type = "text/plain; charset=utf-8"
    if len(body) <= LOG_SLICE_BYTES:
        return Response(body, media_type=media_type, headers=headers)
    headers = {**headers, "Content-Length": str(len(body))}
    return StreamingResponse(_slices(body), media_type=media_type, headers=headers)


async def _slices(body: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(body)
    for start in range(0, len(view), LOG_SLICE_BYTES):
        yield view[start : start + LOG_SLICE_BYTES]


def _log_headers(part: LogSlice) -> dict[str, str]:
    headers = {
        "X-Log-Start": str(part.start),
        "X-Log-End": str(part.end),
        "X-Log-Size": str(part.size),
        "X-Log-Truncated": "true" if part.truncated else "false",
        "X-Log-Cut-Bytes": str(part.cut_bytes),
    }
    if part.layout is not None and part.cut_bytes:
        headers["X-Log-Cut-At"] = str(part.layout.head_end)
    if part.skipped:
        headers["X-Log-Skipped"] = str(part.skipped)
    return headers


async def _follow(
    store: RunStore,
    path: Path,
    name: str,
    first: LogSlice,
    closing: threading.Event,
    token_valid: Callable[[], bool],
) -> AsyncIterator[str]:
    """The log from the end of ``first`` on, until the run ends, the server shuts down, or the caller's
    token is revoked (looked at again every TOKEN_RECHECK_S: a revoke ends the stream within ~2 s)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a chunk may end mid-character
    offset, cut, checked_at = first.end, first.cut_bytes, time.monotonic()
    line_start = not first.data or first.data.endswith(b"\n")  # where a note of a skip may go as it is
    yield first.text
    while True:
        if time.monotonic() - checked_at >= TOKEN_RECHECK_S:
            if not await run_in_threadpool(token_valid):
                return
            checked_at = time.monotonic()
        ended = get_run(store, name).status.is_terminal()  # read before the file: no line is missed
        # From where it was, carried over any cut made since (the log's end moves down at each).
        part = await run_in_threadpool(read_range, path, offset, FOLLOW_CHUNK_BYTES, cut, False)
        if part.skipped:  # output cut before this stream got to it: say so where it is missing
            yield decoder.decode(b"", final=True) + _skipped_note(part.skipped, line_start)
            decoder.reset()
        if part.size or part.layout:  # (a log that is gone reads as empty: keep the place)
            offset, cut = part.end, part.cut_bytes
        if part.data:
            line_start = part.data.endswith(b"\n")
            yield decoder.decode(part.data)
        elif ended or closing.is_set():  # the server is shutting down: end cleanly, not cut off
            yield decoder.decode(b"", final=True)
            return
        else:
            await asyncio.sleep(FOLLOW_INTERVAL_S)


def _skipped_note(skipped: int, line_start: bool) -> str:
    """A line of its own that says where ``skipped`` bytes of output are missing from the stream."""
    note = (
        f"[labrun: {skipped} bytes of output cut here before this stream read them (LABRUN_MAX_LOG_BYTES)]\n"
    )
    return note if line_start else "\n" + note


@router.post("/{name}/cancel", response_model=RunPublic)
async def cancel_run(name: str, caller: CallerDep, manager: ManagerDep, view: ViewDep) -> RunPublic:
    """A queued run leaves the queue; a running one gets SIGTERM, a grace period, then SIGKILL.
    409 if the run already finished; only its owner or an admin may (who did is recorded)."""
    caller.check_may_change(get_run(manager.store, name), "cancel")
    return view.one(await run_in_threadpool(manager.cancel, name, caller.name))


@router.post("/{name}/resume", response_model=RunPublic)
async def resume_run(
    name: str, caller: CallerDep, manager: ManagerDep, view: ViewDep, body: ResumeRequest | None = None
) -> RunPublic:
    """A failed or cancelled run continues from its last checkpoint, in the same run directory and WandB
    run, as its next attempt (409 when it has no checkpoint), with ``time_limit`` more running time if
    given; only its owner or an admin may."""
    caller.check_may_change(get_run(manager.store, name), "resume")
    limit = body.time_limit if body is not None else None
    return view.one(await run_in_threadpool(manager.resume, name, limit))


@router.post("/{name}/time-limit", response_model=RunPublic)
async def change_time_limit(
    name: str, body: TimeLimitChange, caller: CallerDep, manager: ManagerDep, view: ViewDep
) -> RunPublic:
    """A queued or running run's new time limit (``time_limit``), or more time (``extend_by``): its owner up
    to their maximum of running time left, an admin beyond it (422 naming the maximum); 409 once it is
    stopping at its limit or finished (resume it with a new limit then)."""
    record = get_run(manager.store, name)
    caller.check_may_change(record, "change the time limit of")
    seconds = body.time_limit
    if body.extend_by is not None:  # a run without a limit gets this much from now
        base = record.time_limit_s if record.time_limit_s is not None else running_time(record, time.time())
        seconds = base + body.extend_by
    return view.one(await run_in_threadpool(manager.set_time_limit, name, seconds, caller.is_admin))


@router.post("/{name}/extend-stall", response_model=RunPublic)
async def extend_stall(
    name: str, caller: CallerDep, manager: ManagerDep, view: ViewDep, body: StallExtension | None = None
) -> RunPublic:
    """A running run (stalled or not) is not stalled now: its stall clock starts again, and with
    ``stall_after_s`` its own limit becomes that (up to LABRUN_MAX_STALL_AFTER_S). 409 unless it is
    running; only its owner or an admin may."""
    caller.check_may_change(get_run(manager.store, name), "extend")
    seconds = body.stall_after_s if body is not None else None
    return view.one(await run_in_threadpool(manager.extend_stall, name, seconds))


@router.get("/{name}/attempts")
async def run_attempts(name: str, store: StoreDep) -> dict[str, Any]:
    """The run's earlier attempts (each kept when the run was resumed), first first."""
    get_run(store, name)
    return {"attempts": store.attempts_of(name)}


@router.post("/{name}/rerun", status_code=201, response_model=RunPublic)
async def rerun_run(name: str, new: CreationDep, manager: ManagerDep, view: ViewDep) -> RunPublic:
    """A new run with the same overrides and seed, owned by the caller; its ``rerun_of`` names the original."""
    record, replayed = await run_in_threadpool(manager.rerun, name, new.idempotency_key, new.caller.name)
    new.created("runs", record.name, replayed)
    return view.one(record)
