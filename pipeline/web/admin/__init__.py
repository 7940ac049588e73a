"""The admin API under ``/api/admin``: subscribers and issues, for the web console of
editors and operators.

Every request carries ``Authorization: Bearer <token>`` (``auth``). Errors are JSON
``{"detail": …}``: 400 for a value the domain refuses (an address, a name, a list, a
status, an article, a time), 404 for an unknown subscriber or issue, 409 for an issue
in a state that does not allow the action, and 422 (``detail`` lists ``where`` and
``problem``) for a request of the wrong shape. Every string and list of a request is
bounded, and the bounds are in ``/openapi.json`` (``schemas``).

The handlers are synchronous (FastAPI runs them in its thread pool) and call the same
domain functions as the CLI: ``pipeline.audience.changes``, ``directory`` and
``consent`` for subscribers (``subscribers``), ``pipeline.sending.issues`` and
``reports`` for issues (``issues``). Batches that a resumed or retried issue needs go
to the Celery queue when ``REDIS_URL`` is set; without it this process sends them
after answering, as the CLI does (``queue``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from pipeline.web.admin import issues, subscribers
from pipeline.web.admin.auth import authorised
from pipeline.web.admin.schemas import COMMON, PREFIX

router = APIRouter(
    prefix=PREFIX,
    tags=["admin"],
    dependencies=[Depends(authorised)],
    responses=COMMON,
)
router.include_router(subscribers.router)
router.include_router(issues.router)
