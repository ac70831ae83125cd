"""`labrun reserve`, `labrun reservations`, `labrun unreserve` against a real service with two GPUs (the
local launcher hands out their ids; nothing runs on them here), and the times the CLI reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import FAKE_TRAINER, run_cli
from service_process import ServiceProcess

from labrun import when


@pytest.fixture(scope="module")
def gpu_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    output_dir: Path = tmp_path_factory.mktemp("cli-reserve") / "outputs"
    output_dir.mkdir()
    svc = ServiceProcess(output_dir, FAKE_TRAINER, LABRUN_GPUS="0,1", LABRUN_GPU_GUARD="false").start()
    yield svc
    svc.stop()


def test_reserve_prints_the_gpus_it_got_and_reservations_lists_them(gpu_service):
    made = run_cli(gpu_service.url, "reserve", "2", "--from", "+1h", "--to", "+3h", "--note", "paper")
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("reservation 1: GPU 0, 1, "), made.stdout
    clash = run_cli(gpu_service.url, "reserve", "1", "--from", "+2h", "--to", "+4h")
    assert clash.returncode != 0
    assert "only 0 of this server's 2" in clash.stderr
    listed = run_cli(gpu_service.url, "reservations", COLUMNS="200")
    assert listed.returncode == 0, listed.stderr
    assert "upcoming  0,1" in listed.stdout
    assert "paper" in listed.stdout
    ended = run_cli(gpu_service.url, "unreserve", "1")
    assert ended.stdout.strip() == "reservation 1 ended: GPU 0, 1 free"
    assert "no reservations ahead" in run_cli(gpu_service.url, "reservations").stdout
    assert "ended early by local" in run_cli(gpu_service.url, "reservations", "--all").stdout


def test_a_time_the_cli_cannot_read_is_refused_before_any_request(gpu_service):
    bad = run_cli(gpu_service.url, "reserve", "1", "--from", "frday 14:00", "--to", "+1h")
    assert bad.returncode == 2
    assert "'frday' in 'frday 14:00' is not a day" in bad.stderr


def test_day_names_iso_and_offsets():
    tz = dt.timezone(dt.timedelta(hours=2))
    thursday = dt.datetime(2026, 12, 3, 15, 30, tzinfo=tz)  # a Thursday
    assert when.parse("fri 14:00", thursday) == dt.datetime(2026, 12, 4, 14, 0, tzinfo=tz)
    assert when.parse("Thursday 16:00", thursday) == dt.datetime(2026, 12, 3, 16, 0, tzinfo=tz)
    assert when.parse("thu 9:00", thursday) == dt.datetime(2026, 12, 10, 9, 0, tzinfo=tz)  # passed: next week
    assert when.parse("tomorrow 9:05", thursday) == dt.datetime(2026, 12, 4, 9, 5, tzinfo=tz)
    assert when.parse("+90m", thursday) == thursday + dt.timedelta(minutes=90)
    assert when.parse("2026-12-04T14:00+01:00", thursday).utcoffset() == dt.timedelta(hours=1)
    naive = when.parse("2026-12-04 14:00", thursday)
    assert naive.tzinfo is not None  # local time, made explicit
    assert naive.replace(tzinfo=None) == dt.datetime(2026, 12, 4, 14, 0)
    with pytest.raises(when.BadTime, match="is not a time"):
        when.parse("fri 25:00", thursday)
