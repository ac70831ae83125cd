"""The GPU guard's wire models (``app/gpus/``), and the one place its values become them: in ``/healthz``,
``/queue`` and ``/gpus`` (``app/api/routes/gpus.py``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.gpus import ForeignProcess, GuardView
from app.store.gpus import GpuIgnore


class OutsideProcess(BaseModel):
    """A compute process on one of labrun's GPUs that no run of labrun started."""

    gpu: int
    pid: int
    user: str = Field(description="its Unix user")
    command: str
    used_mb: int | None = Field(description="GPU memory it holds (MiB); null: the driver does not say")
    since: dt.datetime = Field(description="when labrun first saw it on this GPU")
    ignored_by: int | None = Field(
        None, description="the admin's ignore rule that lets it be (it does not block)"
    )
    reason: str = Field(description="the sentence runs that wait for this GPU show")


class GpuGuardPublic(BaseModel):
    enabled: bool = Field(description="whether labrun checks its GPUs for processes outside labrun (NVML)")
    detail: str
    probed_at: dt.datetime | None = Field(None, description="its last look (once per interval)")
    busy_outside: list[int] = Field(description="GPUs not handed out: a process outside labrun holds them")
    outside: list[OutsideProcess] = Field(
        description="every such process above the threshold, ignored or not"
    )


class GpuPublic(BaseModel):
    index: int = Field(description="labrun's GPU id: NVML's and nvidia-smi's index (PCI bus order)")
    uuid: str | None = None
    model: str | None = None
    state: str = Field(description="run (a labrun run has it), outside (busy outside labrun) or free")
    run: str | None = Field(None, description="the labrun run on it")
    outside: list[OutsideProcess] = Field(default_factory=list)


class GpusPublic(BaseModel):
    guard: GpuGuardPublic
    gpus: list[GpuPublic]


class GpuIgnorePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    pid: int | None = Field(None, description="that one process (by its pid and start time)")
    pattern: str | None = Field(None, description="every process whose command line matches (shell-style)")
    note: str | None = None
    created_by: str | None = None
    created_at: dt.datetime


class GpuIgnoresPublic(BaseModel):
    ignores: list[GpuIgnorePublic]


class GpuIgnoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: int | None = Field(None, ge=1, description="ignore this process (only it: a reused pid is not)")
    pattern: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="ignore every process whose command matches, e.g. *jupyter*",
    )
    note: str | None = Field(None, max_length=500, description="why (shown with the rule)")

    @model_validator(mode="after")
    def _one(self) -> GpuIgnoreCreate:
        if (self.pid is None) == (self.pattern is None):
            raise ValueError(
                "give exactly one of pid (one process) or pattern (a command pattern such as *jupyter*)"
            )
        return self


class UnixUserMap(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=64, description="the labrun user whose fair share counts it")


class UnixUsersPublic(BaseModel):
    unix_users: dict[str, str] = Field(description="Unix user -> labrun user")


def outside_public(process: ForeignProcess) -> OutsideProcess:
    return OutsideProcess(
        gpu=process.gpu,
        pid=process.pid,
        user=process.user,
        command=process.command,
        used_mb=process.used_mb,
        since=dt.datetime.fromtimestamp(process.since, dt.UTC),
        ignored_by=process.ignored_by,
        reason=process.describe(),
    )


def guard_public(view: GuardView) -> GpuGuardPublic:
    return GpuGuardPublic(
        enabled=view.enabled,
        detail=view.detail,
        probed_at=None if view.probed_at is None else dt.datetime.fromtimestamp(view.probed_at, dt.UTC),
        busy_outside=sorted(view.busy),
        outside=[outside_public(p) for p in view.foreign],
    )


def gpus_public(view: GuardView, gpus: Iterable[int], on_gpu: dict[int, str]) -> GpusPublic:
    """Each of the service's GPUs: its identity (from NVML), who has it, what runs on it outside labrun."""
    known = {g.index: g for g in view.gpus}
    answer = []
    for index in gpus:
        identity = known.get(index)
        outside = [outside_public(p) for p in view.foreign if p.gpu == index]
        state = "run" if index in on_gpu else "outside" if index in view.busy else "free"
        answer.append(
            GpuPublic(
                index=index,
                uuid=identity.uuid if identity else None,
                model=identity.model if identity else None,
                state=state,
                run=on_gpu.get(index),
                outside=outside,
            )
        )
    return GpusPublic(guard=guard_public(view), gpus=answer)


def ignores_public(rules: Iterable[GpuIgnore]) -> GpuIgnoresPublic:
    return GpuIgnoresPublic(ignores=[ignore_public(r) for r in rules])


def ignore_public(rule: GpuIgnore) -> GpuIgnorePublic:
    return GpuIgnorePublic.model_validate(rule)
