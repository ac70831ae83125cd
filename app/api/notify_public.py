"""The wire models of notifications (``/me/notify``): what a user sends and sees of their destinations."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from app.store.outbox import Destination


class DestinationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="an Apprise URL (mailto://..., slack://..., ...) or a signed JSON webhook "
        "(labrun+https://host/path)",
        max_length=4096,
    )
    events: list[str] | None = Field(
        None,
        description="this destination's own filter: only these of the events your choices send reach it "
        "(the server's events for a server-wide one); null: all of them",
    )


class DestinationPublic(BaseModel):
    id: int
    kind: str = Field(description="apprise, or webhook (the signed JSON webhook)")
    label: str = Field(description="the URL with its secrets masked")
    created_at: dt.datetime
    state: str = Field(description="active, or paused (it kept failing; a successful test resumes it)")
    failures: int = Field(description="failed tries in a row")
    last_error: str | None = Field(None, description="why the last try failed, in general terms")
    last_error_at: dt.datetime | None = None
    last_sent_at: dt.datetime | None = None
    events: list[str] | None = Field(None, description="its own filter of events (null: all)")

    @classmethod
    def of(cls, d: Destination) -> DestinationPublic:
        return cls(
            id=d.id,
            kind=d.kind,
            label=d.label,
            created_at=_time(d.created_at),
            state="paused" if d.paused_at else "active",
            failures=d.failures,
            last_error=d.last_error,
            last_error_at=_time(d.last_error_at) if d.last_error_at else None,
            last_sent_at=_time(d.last_sent_at) if d.last_sent_at else None,
            events=d.events,
        )


class DestinationAdded(DestinationPublic):
    signing_secret: str | None = Field(
        None, description="the webhook's signing secret, shown this once (HMAC-SHA256 key)"
    )


class DestinationsPublic(BaseModel):
    data: list[DestinationPublic]
    count: int


class TestResult(BaseModel):
    ok: bool
    error: str | None = None


class DestinationEvents(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[str] | None = Field(description="the events this destination gets (null: all)")


class NotifyEvents(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[str] = Field(
        description="the events your runs send by default: succeeded, failed, cancelled, sweep_finished, "
        "preempted, resumed"
    )


def _time(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)
