"""`GET /api/v1/jobs` (admin): each background job's last run, duration and outcome."""

from __future__ import annotations

from typing import Any

from bindify_appliance.api.base import ApiHandler, operation
from bindify_appliance.api.pagination import (
    PAGE_PARAMS,
    list_schema,
    page_json,
    requested_page,
)
from bindify_appliance.api.schema import TIMESTAMP, Named, integer, nullable, obj, string
from bindify_appliance.clock import iso
from bindify_appliance.store import accounts as accounts_store
from bindify_appliance.store.accounts import JobRecord
from bindify_appliance.store.models import JOB_OUTCOMES

__all__ = ["JOB", "JobsHandler"]

JOB = Named(
    "Job",
    obj(
        {
            "name": string(),
            "last_started_at": TIMESTAMP,
            "last_finished_at": nullable(TIMESTAMP),
            "duration_ms": nullable(integer(minimum=0)),
            "outcome": string(enum=JOB_OUTCOMES),
            "detail": nullable(string()),
        },
        required=(
            "name",
            "last_started_at",
            "last_finished_at",
            "duration_ms",
            "outcome",
            "detail",
        ),
    ),
)


def job_json(job: JobRecord) -> dict[str, Any]:
    return {
        "name": job.name,
        "last_started_at": iso(job.last_started_at),
        "last_finished_at": iso(job.last_finished_at) if job.last_finished_at else None,
        "duration_ms": job.duration_ms,
        "outcome": job.outcome,
        "detail": job.detail,
    }


class JobsHandler(ApiHandler):
    @operation(
        "Background jobs and their last run",
        access="admin",
        tag="jobs",
        query=PAGE_PARAMS,
        response=list_schema(JOB),
    )
    async def get(self) -> None:
        after, limit = requested_page(self, (str,))
        rows = await self.ctx.store.run(accounts_store.list_jobs, after, limit + 1)
        self.write_json(page_json(rows, limit, lambda j: (j.name,), job_json))
