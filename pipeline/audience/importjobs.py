"""Imports started from the console: a CSV file uploaded, kept, imported by a worker
(or by the service itself without Redis), with its progress and its bad-rows report.

    receive   the upload: checked (UTF-8, a header with an email column, the size), kept
              as ``data_dir/imports/<id>.csv`` and recorded as a queued job
    run       what the worker's task calls with the job's id: the same ``import_csv`` as
              ``letterpress subscribers import``, its progress written to the job, the
              bad rows to ``<id>.problems.csv``
    stop      a cooperative stop: the import ends after the chunk it is writing
    again     imports the kept file once more (re-importing changes nothing that the
              first import did: the rule of ``import_csv``)

A job's task is given its id alone: the file is found from it, so neither its path nor
its contents travel through the broker or into a log. A running import beats (writes
``heartbeat_at``) with every chunk; one that has not beaten for ``STALE_SECONDS`` was
interrupted (its worker died) and ``Job.interrupted`` says so: importing it again
finishes it, since re-imports are idempotent.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from pipeline.audience import imports
from pipeline.audience.csvfile import Columns, read_records
from pipeline.audience.lists import check_list_name
from pipeline.errors import LetterpressError, NotFound
from pipeline.people import audit
from pipeline.settings import Settings
from pipeline.statuses import ImportStatus
from pipeline.store import db
from pipeline.store.db import import_jobs

log = logging.getLogger(__name__)

J = import_jobs.c
STALE_SECONDS = 120  # a running import that has not beaten this long was interrupted
COPY_BYTES = 1 << 20  # the upload is copied a megabyte at a time
HEADER_BYTES = 64 * 1024  # the header row must be within the first 64 KB
ACTIVE = (ImportStatus.QUEUED, ImportStatus.RUNNING)
ENDED = (ImportStatus.DONE, ImportStatus.STOPPED, ImportStatus.FAILED)


class UploadError(LetterpressError):
    """An upload the console refuses, saying what to do; nothing is kept or imported."""

    status = 400


class TooLarge(UploadError):
    status = 413


class Stopped(Exception):
    """Raised from the progress callback when the job was asked to stop."""


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int | None
    file_name: str
    size: int
    list_name: str | None
    status: ImportStatus
    rows_total: int
    rows_done: int
    new: int
    updated: int
    unchanged: int
    kept: int
    problems: int
    summary: str
    error: str
    stop_requested: bool
    created_at: datetime
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None

    @property
    def interrupted(self) -> bool:
        """Running, but its worker has not been heard of for ``STALE_SECONDS``."""
        beat = self.heartbeat_at or self.started_at
        return (
            self.status == ImportStatus.RUNNING
            and beat is not None
            and db.now() - beat > timedelta(seconds=STALE_SECONDS)
        )

    @property
    def active(self) -> bool:
        """Queued or running (and not interrupted): its page keeps polling."""
        return self.status in ACTIVE and not self.interrupted

    @property
    def may_import_again(self) -> bool:
        return self.status in ENDED or self.interrupted

    @property
    def share(self) -> float:
        """How far it is, 0 to 1."""
        if self.status == ImportStatus.DONE:
            return 1.0
        return min(1.0, self.rows_done / self.rows_total) if self.rows_total else 0.0


def folder(settings: Settings) -> Path:
    return settings.data_dir / "imports"


def file_of(settings: Settings, job_id: int) -> Path:
    return folder(settings) / f"{job_id}.csv"


def report_of(settings: Settings, job_id: int) -> Path:
    return folder(settings) / f"{job_id}.problems.csv"


# -- the upload ---------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    """The uploaded file's own name, for people: no folders, no control characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()
    return (base or "upload.csv")[:255]


def _check_header(name: str, head: bytes) -> None:
    """The first row names the columns, one of them email (``Columns.from_header``)."""
    text = head.decode("utf-8-sig", errors="ignore")
    first = next(read_records(csv.reader(io.StringIO(text))), None)
    if first is None or not text.strip():
        raise UploadError(
            f"{name}: the file is empty: the first row must name the columns, one of them email"
        )
    line, fields = first
    if isinstance(fields, str):
        raise UploadError(f"{name}:{line}: this is not a CSV file: {fields}")
    if b"\n" not in head and len(head) >= HEADER_BYTES:
        raise UploadError(f"{name}:1: the first row is over {HEADER_BYTES:,} bytes: not a header")
    try:
        Columns.from_header(f"{name}:{line}", fields)
    except LetterpressError as exc:
        raise UploadError(str(exc)) from None


def _copy(name: str, source: IO[bytes], target: IO[bytes], max_bytes: int) -> tuple[int, int]:
    """Copy the upload, checking it is UTF-8 on the way; its size and number of lines."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    size = lines = 0
    last = b"\n"
    head = b""
    checked = False
    for block in iter(lambda: source.read(COPY_BYTES), b""):
        size += len(block)
        if size > max_bytes:
            raise TooLarge(
                f"{name} is larger than {max_bytes:,} bytes, the most the console imports:"
                " split it, or import it with `letterpress subscribers import`"
            )
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            raise UploadError(_not_utf8(name, lines, block, exc.start)) from None
        if not checked:
            head += block[: HEADER_BYTES - len(head)]
            if len(head) >= HEADER_BYTES or b"\n" in head:
                _check_header(name, head)
                checked = True
        lines += block.count(b"\n")
        last = block[-1:]
        target.write(block)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UploadError(
            f"{name}: the file ends in the middle of a character: save it as UTF-8"
        ) from None
    if not checked:
        _check_header(name, head)
    if last != b"\n":
        lines += 1  # a last line without its newline
    return size, lines


def _not_utf8(name: str, lines_before: int, block: bytes, at: int) -> str:
    line = lines_before + block.count(b"\n", 0, at) + 1
    return (
        f"{name}:{line}: not UTF-8 (byte 0x{block[at]:02x}): save the file as UTF-8"
        " (CSV UTF-8) and upload it again; nothing was imported"
    )


def receive(
    engine: sa.Engine,
    settings: Settings,
    user_id: int | None,
    file_name: str,
    source: IO[bytes],
    list_name: str | None = None,
) -> Job:
    """Keep an uploaded CSV file and record its import, queued. An UploadError (not
    CSV, not UTF-8, no email column, too large, a bad list name) keeps nothing."""
    name = _safe_name(file_name)
    if list_name is not None:
        try:
            list_name = check_list_name(list_name)
        except ValueError as exc:
            raise UploadError(f"List: {exc}") from None
    where = folder(settings)
    where.mkdir(parents=True, exist_ok=True)
    partial = where / f".upload-{os.getpid()}-{id(source)}.partial"
    try:
        with partial.open("wb") as target:
            size, lines = _copy(name, source, target, settings.import_max_bytes)
        with engine.begin() as conn:
            job_id = conn.execute(
                sa.insert(import_jobs)
                .values(
                    user_id=user_id,
                    file_name=name,
                    size=size,
                    list_name=list_name,
                    status=ImportStatus.QUEUED,
                    rows_total=max(lines - 1, 0),
                    created_at=db.now(),
                )
                .returning(J.id)
            ).scalar_one()
            os.replace(partial, file_of(settings, job_id))
            on = f" onto the list {list_name}" if list_name else ""
            audit.record(conn, user_id, "import started", f"import {job_id}: {name}{on}")
    finally:
        partial.unlink(missing_ok=True)
    return get(engine, job_id)


# -- reading ------------------------------------------------------------------------------


def _job(row: Any) -> Job:
    values = dict(row._mapping)
    values["status"] = ImportStatus(values["status"])
    return Job(**values)


def get(engine: sa.Engine, job_id: int) -> Job:
    with engine.connect() as conn:
        row = conn.execute(sa.select(import_jobs).where(J.id == job_id)).first()
    if row is None:
        raise NotFound(f"there is no import {job_id}")
    return _job(row)


def recent(engine: sa.Engine, limit: int = 20) -> list[Job]:
    query = sa.select(import_jobs).order_by(J.id.desc()).limit(limit)
    with engine.connect() as conn:
        return [_job(row) for row in conn.execute(query)]


@dataclass(frozen=True)
class BadRow:
    line: int
    message: str


def bad_rows(settings: Settings, job_id: int, limit: int, offset: int = 0) -> list[BadRow]:
    """A page of the job's bad rows, in file order (from its report file)."""
    path = report_of(settings, job_id)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = itertools.islice(csv.reader(handle), offset + 1, offset + 1 + limit)
        return [BadRow(int(line), message) for line, message in rows]


def report_lines(settings: Settings, job_id: int) -> Iterator[bytes]:
    """The whole bad-rows report (``line,message``), as the file it is kept in."""
    path = report_of(settings, job_id)
    if not path.is_file():
        yield b"line,message\r\n"
        return
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(COPY_BYTES), b"")


# -- running ------------------------------------------------------------------------------


def _claim(engine: sa.Engine, job_id: int) -> bool:
    now = db.now()
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(import_jobs)
            .where(J.id == job_id, J.status == ImportStatus.QUEUED)
            .values(status=ImportStatus.RUNNING, started_at=now, heartbeat_at=now, rows_done=0)
        )
    return done.rowcount == 1


def _finish(engine: sa.Engine, job_id: int, **values: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.update(import_jobs)
            .where(J.id == job_id, J.status == ImportStatus.RUNNING)
            .values(finished_at=db.now(), heartbeat_at=db.now(), **values)
        )


def run(settings: Settings, job_id: int) -> ImportStatus | None:
    """Import a queued job's file (the worker's task, or the service without Redis).

    Returns how it ended, or None when the job was not queued (a task delivered twice,
    or a job stopped before it started): then nothing is done.
    """
    engine = db.engine(settings.database_url)
    if not _claim(engine, job_id):
        return None
    job = get(engine, job_id)
    path = file_of(settings, job_id)

    def progress(rows: int) -> None:
        with engine.begin() as conn:
            stop = conn.execute(
                sa.update(import_jobs)
                .where(J.id == job_id)
                .values(rows_done=rows, heartbeat_at=db.now())
                .returning(J.stop_requested)
            ).scalar()
        if stop:
            raise Stopped

    try:
        report = imports.import_csv(engine, path, list_name=job.list_name, progress=progress)
    except Stopped:
        _finish(engine, job_id, status=ImportStatus.STOPPED)
        audit.record(engine, job.user_id, "import stopped", f"import {job_id}: {job.file_name}")
        return ImportStatus.STOPPED
    except LetterpressError as exc:
        error = str(exc).replace(str(path), job.file_name)
        _finish(engine, job_id, status=ImportStatus.FAILED, error=error)
        audit.record(engine, job.user_id, "import failed", f"import {job_id}: {error}")
        return ImportStatus.FAILED
    except Exception:
        log.exception("import %s failed", job_id)
        error = "the import failed unexpectedly: the log of the process that ran it says why"
        _finish(engine, job_id, status=ImportStatus.FAILED, error=error)
        audit.record(engine, job.user_id, "import failed", f"import {job_id}: {error}")
        return ImportStatus.FAILED
    _write_report(settings, job_id, report)
    summary = report.summary()
    _finish(
        engine,
        job_id,
        status=ImportStatus.DONE,
        rows_done=report.rows,
        rows_total=report.rows,
        new=report.new,
        updated=report.updated,
        unchanged=report.unchanged,
        kept=sum(report.kept.values()),
        problems=len(report.problems),
        summary=summary,
    )
    audit.record(engine, job.user_id, "imported", f"import {job_id}: {job.file_name}: {summary}")
    return ImportStatus.DONE


def _write_report(settings: Settings, job_id: int, report: imports.ImportReport) -> None:
    path = report_of(settings, job_id)
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "message"])
        writer.writerows((p.line, p.message) for p in report.problems)
    os.replace(partial, path)


# -- steering -----------------------------------------------------------------------------


def stop(engine: sa.Engine, job_id: int, user_id: int | None) -> Job:
    """Ask a queued or running import to stop. A queued one stops at once; a running one
    after the chunk it is writing (the rows written before stay imported)."""
    job = get(engine, job_id)
    if not job.active:
        raise JobStateError(f"import {job_id} is {_state(job)}: there is nothing to stop")
    with engine.begin() as conn:
        conn.execute(
            sa.update(import_jobs)
            .where(J.id == job_id, J.status == ImportStatus.QUEUED)
            .values(status=ImportStatus.STOPPED, finished_at=db.now(), stop_requested=True)
        )
        conn.execute(
            sa.update(import_jobs)
            .where(J.id == job_id, J.status == ImportStatus.RUNNING)
            .values(stop_requested=True)
        )
        audit.record(conn, user_id, "import stop asked", f"import {job_id}: {job.file_name}")
    return get(engine, job_id)


def again(engine: sa.Engine, settings: Settings, job_id: int, user_id: int | None) -> Job:
    """Queue an ended (or interrupted) import of the kept file once more."""
    job = get(engine, job_id)
    if not job.may_import_again:
        raise JobStateError(f"import {job_id} is {_state(job)}: wait for it to end first")
    if not file_of(settings, job_id).is_file():
        raise JobStateError(f"the file of import {job_id} is no longer kept: upload it again")
    cutoff = db.now() - timedelta(seconds=STALE_SECONDS)
    stale = sa.and_(J.status == ImportStatus.RUNNING, J.heartbeat_at < cutoff)
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(import_jobs)
            .where(J.id == job_id, sa.or_(J.status.in_(ENDED), stale))
            .values(
                status=ImportStatus.QUEUED,
                rows_done=0,
                stop_requested=False,
                error="",
                started_at=None,
                heartbeat_at=None,
                finished_at=None,
            )
        )
        if done.rowcount != 1:
            raise JobStateError(f"import {job_id} changed meanwhile: look at it again")
        audit.record(conn, user_id, "import started", f"import {job_id}: {job.file_name}, again")
    report_of(settings, job_id).unlink(missing_ok=True)
    return get(engine, job_id)


class JobStateError(LetterpressError):
    """The job is not in a state that allows this."""


def _state(job: Job) -> str:
    return "interrupted" if job.interrupted else str(job.status)
