"""Bounded run logs (issue 20, defect 10): the writer (trainer/logbound.py) keeps a log's beginning and its
end with a marker line between them, the readers (app/runfiles.py) see the file as kept and what was cut,
positions handed out before a cut are carried over to the file as it is after it, and the service (a
local run, the logs route, follow, the run's answer, the disk guard) says all of it."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import make_settings, submit, wait_for

from app.core.config import SettingsError, load_settings
from app.diskspace import DiskGuard
from app.main import create_app
from app.runfiles import read_range, read_tail
from trainer.logbound import MIN_BOUND, BoundedLog, LogCut, cut_path, marker, read_cut

BOUND = MIN_BOUND  # 64 KiB: head ~32 KiB, tail ~16-32 KiB
# A marker of the file, or a follower's note of a skip: "[labrun: N bytes of output cut here..."
CUT_LINE = re.compile(rb"\[labrun: (\d+) bytes of output cut here[^\n]*\]\n")
LINE = re.compile(rb"fake trainer \S+: line (\d+)\n")


def stream(lines: int, start: int = 1) -> bytes:
    return b"".join(b"output line %d of the run\n" % i for i in range(start, start + lines))


def write(log: Path, data: bytes, bound: int = BOUND, piece: int = 4096) -> BoundedLog:
    writer = BoundedLog(log, bound)
    for at in range(0, len(data), piece):
        writer.write(data[at : at + piece])
    return writer


def restore(seen: bytes, output: bytes) -> bytes:
    """``seen`` with each cut line replaced by the bytes of ``output`` it stands for: what was read plus
    what it says is missing must be the output exactly, in order."""
    restored, at = b"", 0
    for match in CUT_LINE.finditer(seen):
        restored += seen[at : match.start()]
        restored += output[len(restored) : len(restored) + int(match.group(1))]
        at = match.end()
    return restored + seen[at:]


def test_a_log_past_its_bound_keeps_its_beginning_a_marker_and_its_end(tmp_path):
    log, output = tmp_path / "log", stream(40_000)  # ~1 MB through a 64 KiB bound
    write(log, output).close()
    kept, cut = log.read_bytes(), read_cut(log)
    assert cut is not None
    assert len(kept) <= BOUND
    head, rest = kept[: cut.head_end], kept[cut.head_end :]
    assert output.startswith(head)
    assert head.endswith(b"\n")
    assert len(head) > BOUND // 4
    assert rest.startswith(marker(cut.cut_bytes, lead=False))
    assert b"%d bytes" % cut.cut_bytes in rest
    tail = kept[cut.tail_start :]
    assert output.endswith(tail)
    assert tail.startswith(b"output line ")
    assert len(tail) >= BOUND // 8
    assert cut.cut_bytes == len(output) - len(head) - len(tail)  # what the marker says is what is missing
    assert restore(kept, output) == output


def test_an_unbounded_or_small_log_is_left_as_written(tmp_path):
    output = stream(5_000)
    write(tmp_path / "unbounded", output, bound=0).close()
    write(tmp_path / "small", output[: BOUND - 1]).close()
    assert (tmp_path / "unbounded").read_bytes() == output
    assert read_cut(tmp_path / "unbounded") is None
    assert (tmp_path / "small").read_bytes() == output[: BOUND - 1]
    assert not cut_path(tmp_path / "small").exists()


def test_a_single_huge_line_is_cut_too_with_the_marker_on_a_line_of_its_own(tmp_path):
    log, output = tmp_path / "log", b"x" * 500_000 + b"\nthe end\n"
    write(log, output).close()
    cut = read_cut(log)
    assert cut is not None
    assert cut.lead
    assert len(log.read_bytes()) <= BOUND + 1
    kept = log.read_bytes()
    assert kept[cut.head_end : cut.tail_start].startswith(b"\n[labrun: ")  # the head ends mid-line
    assert kept.endswith(b"the end\n")
    assert restore(kept[: cut.head_end] + kept[cut.head_end + 1 :], output) == output


def test_the_next_attempts_writer_carries_on_with_the_cut(tmp_path):
    """A resumed run (or a requeued Slurm job) appends to the same log with a new writer."""
    log, first, second = tmp_path / "log", stream(20_000), stream(20_000, start=20_001)
    write(log, first).close()
    before = read_cut(log)
    write(log, second).close()
    after = read_cut(log)
    assert before is not None
    assert after is not None
    assert after.head_end == before.head_end
    assert len(log.read_bytes()) <= BOUND
    assert restore(log.read_bytes(), first + second) == first + second


@pytest.mark.parametrize("then", [0, 1])  # an offset from before any cut, and one from after the first
def test_positions_handed_out_before_a_cut_are_carried_over(tmp_path, then):
    log, output = tmp_path / "log", stream(40_000)
    writer = write(log, output[:200_000] if then else output[: BOUND - 10])
    seen = read_tail(log, 3)  # a reader's place: the end of the log as it was
    writer.write(output[len(output[:200_000] if then else output[: BOUND - 10]) :])
    writer.close()
    now = read_range(log, seen.end, then_cut=seen.cut_bytes)
    assert now.skipped > 0  # what came right after its place was cut since
    written_at = len(output[:200_000] if then else output[: BOUND - 10])
    assert output[written_at + now.skipped :] == log.read_bytes()[now.start :]
    # Without then_cut the offset is a position in the file as kept: here past its end.
    assert read_range(log, seen.end).data == b""


def test_moved_keeps_head_positions_and_moves_tail_positions_down():
    cut = LogCut(head_end=1000, cut_bytes=5000)
    assert cut.moved(500, then_cut=0) == (500, 0)  # in the head: never moves
    assert cut.moved(1000 + 5000 + 300, then_cut=0) == (cut.tail_start + 300, 0)  # kept: moved down
    assert cut.moved(1200, then_cut=0) == (cut.tail_start, 4800)  # cut since: the tail's start
    older = LogCut(1000, 2000)
    assert cut.moved(older.tail_start + 3500, then_cut=2000) == (cut.tail_start + 500, 0)
    assert cut.moved(older.head_end + 5, then_cut=2000) == (cut.tail_start, 3000)  # inside the old marker


def test_a_reader_never_sees_a_compaction_half_done(tmp_path):
    """Readers hold a shared lock: each page they get is bytes of the output, in order, with at most a
    marker in it, while the writer keeps compacting under them."""
    log, output = tmp_path / "log", stream(150_000)  # ~4 MB: ~200 compactions of a 64 KiB log
    log.touch()
    done = threading.Event()
    bad: list[bytes] = []

    def read() -> None:
        while not done.is_set():
            page = read_range(log, 0, 1 << 20, whole_lines=False)
            if page.layout is None:
                if not output.startswith(page.data):
                    bad.append(page.data)
                continue
            kept = page.data[page.layout.tail_start :]
            if page.data[: page.layout.head_end] != output[: page.layout.head_end] or kept not in output:
                bad.append(page.data)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        write(log, output, piece=512).close()
    finally:
        done.set()
        reader.join()
    assert not bad, f"{len(bad)} torn reads"


def test_the_setting_is_0_or_at_least_the_minimum():
    assert load_settings(max_log_bytes=0).max_log_bytes == 0
    assert load_settings().max_log_bytes == 1 << 30
    with pytest.raises(SettingsError, match="LABRUN_MAX_LOG_BYTES: must be 0"):
        load_settings(max_log_bytes=1000)


# --- the service, with a local run -----------------------------------------------------------------------


@pytest.fixture
def bounded(tmp_path: Path):
    with TestClient(create_app(make_settings(tmp_path, max_log_bytes=BOUND))) as client:
        yield client


def fake_output(name: str, lines: int) -> bytes:
    return b"".join(b"fake trainer %s: line %d\n" % (name.encode(), i) for i in range(1, lines + 1))


def test_a_local_run_past_the_bound_keeps_head_and_tail_and_the_api_says_what_was_cut(bounded):
    run = wait_for(bounded, submit(bounded, "+extra.fake_lines=30000")["name"])
    name = run["name"]
    assert run["status"] == "succeeded"
    assert run["log_cut_bytes"] > 500_000
    whole = bounded.get(f"/runs/{name}/logs", params={"offset": 0})
    headers, text = whole.headers, whole.text
    assert int(headers["X-Log-Size"]) == len(text.encode()) <= BOUND
    assert int(headers["X-Log-Cut-Bytes"]) == run["log_cut_bytes"]
    at = int(headers["X-Log-Cut-At"])
    assert text.encode()[at:].startswith(b"[labrun: %d bytes of output cut here" % run["log_cut_bytes"])
    assert text.startswith(f"fake trainer {name}: line 1\n")
    assert text.endswith("line 30000\n")
    output = fake_output(name, 30000)
    assert restore(text.encode(), output) == output  # nothing but the cut is missing
    # tail= and pages are positions in the file as kept, and agree with each other.
    tail = bounded.get(f"/runs/{name}/logs", params={"tail": 2})
    assert tail.text == f"fake trainer {name}: line 29999\nfake trainer {name}: line 30000\n"
    assert tail.headers["X-Log-End"] == headers["X-Log-Size"]
    assert tail.headers["X-Log-Cut-Bytes"] == str(run["log_cut_bytes"])
    pages, offset = b"", 0
    while offset < len(text.encode()):
        page = bounded.get(f"/runs/{name}/logs", params={"offset": offset, "length": 5000})
        assert int(page.headers["X-Log-Start"]) == offset
        pages += page.content
        offset = int(page.headers["X-Log-End"])
    assert pages == text.encode()


def test_follow_of_a_run_past_the_bound_streams_all_but_what_it_says_was_cut(bounded):
    """The stream starts in the head (the marker comes through as it is in the file), and goes on across
    compactions made while it follows: bytes cut before it read them are a note at their place."""
    name = submit(bounded, "+extra.fake_lines=20000", "+extra.fake_sleep=10")["name"]
    log = bounded.app.state.files.log_path(name)
    deadline = time.monotonic() + 30
    while bounded.get(f"/runs/{name}").json()["status"] == "queued" or not log.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)

    def more_output() -> None:  # the run printing on, fast: a writer of its own on the same log
        time.sleep(1.0)  # (after the stand-in's own lines, while it sleeps)
        writer = BoundedLog(log, BOUND)
        for first in range(20_001, 60_001, 200):
            writer.write(
                b"".join(
                    b"fake trainer %s: line %d\n" % (name.encode(), i) for i in range(first, first + 200)
                )
            )
            time.sleep(0.005)
        writer.close()

    writer = threading.Thread(target=more_output)
    writer.start()
    with bounded.stream("GET", f"/runs/{name}/logs", params={"follow": "true", "tail": 0}) as response:
        seen = b"".join(response.iter_bytes())
    writer.join()
    assert wait_for(bounded, name)["status"] == "succeeded"
    assert seen.endswith(b": line 60000\n"), seen[:300]
    assert CUT_LINE.search(seen), seen[:300]
    assert b"before this stream read them" in seen  # a note of its own, for what was cut ahead of it
    # Line by line (each print is one write, copied whole): the lines follow each other, and where some
    # are missing, a line says so, and how many bytes they were.
    previous, missing = None, None
    for line in seen.splitlines(keepends=True):
        if (cut := CUT_LINE.fullmatch(line)) is not None:
            missing = (missing or 0) + int(cut.group(1))
            continue
        number = int(LINE.fullmatch(line).group(1))  # type: ignore[union-attr]
        if previous is not None and missing is None:
            assert number == previous + 1, f"line {previous + 1} lost without a word"
        elif previous is not None:
            assert missing == len(fake_output(name, number - 1)) - len(fake_output(name, previous))
        previous, missing = number, None
    assert previous == 60000


def test_the_disk_guard_names_the_running_run_whose_files_hold_the_missing_space(tmp_path):
    run_dir, other = tmp_path / "big", tmp_path / "small"
    run_dir.mkdir(), other.mkdir()
    (run_dir / "ckpt").write_bytes(b"x" * (3 << 20))
    (other / "ckpt").write_bytes(b"x" * 4096)
    total = 1 << 30
    free = total // 100 * 2 - (2 << 20)  # 2 MiB short of 2% free

    class Short(DiskGuard):
        def _measure(self):
            from app.diskspace import DiskState

            return DiskState(False, free, total, 0, 2.0, reason="the output directory's disk is nearly full")

    guard = Short(tmp_path, 0, 2.0)
    guard.watch(lambda: [("big-run", [run_dir]), ("small-run", [other])])
    state = guard.check()
    assert state.run == "big-run"
    assert "run big-run alone holds 3.0 MiB" in (state.reason or "")
    assert "this run's files take 3.0 MiB" in (guard.warning_for("big-run") or "")
    assert guard.warning_for("small-run") is None
    (run_dir / "ckpt").write_bytes(b"x" * 4096)  # no run alone holds what is missing: nobody is named
    guard._sizes = (float("-inf"), {})
    assert guard.check().run is None
