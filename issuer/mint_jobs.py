"""Mint jobs: batches the supplier's ERP asks for (``POST /v1/erp/mint-jobs``), minted and anchored in the
background of ``cardproof issuer serve``.

A job (``mint_jobs``) goes ``queued -> minting -> anchoring -> done``, or ``failed`` with a one-line ``error``;
``progress_done`` / ``progress_total`` count the cards stored (and anchoring is the last step). One
:class:`MintJobRunner` thread per process works through the jobs one at a time (minting is CPU-bound). Jobs are
picked up from the database, so a job left behind by a stopped process is finished by the next one started:
a queued or minting job is (re)minted (a batch minted but not recorded by a process that died stays unanchored,
which sells nothing), an anchoring job is anchored (``anchor_batch`` finishes an earlier attempt; never twice).
Nothing needs a person. When a job ends a webhook ``mint_job.done`` or ``mint_job.failed`` is emitted.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from issuer.storage.models import MintJob

log = logging.getLogger("cardproof.issuer.mint_jobs")

__all__ = ["MintJobRunner", "create_job", "job_json", "run_job"]


def create_job(session: Session, issuer_address: str, *, sku: str, face_value: str, currency: str, count: int,
               expires: str | None = None, anchor: bool = True, api_key_id: str | None = None) -> MintJob:
    """A queued job (the caller commits, then hands its id to a runner)."""
    job = MintJob(issuer_address=issuer_address, api_key_id=api_key_id, sku=sku, face_value=str(face_value),
                  currency=currency, count=int(count), expires=expires, anchor=bool(anchor), state="queued",
                  progress_done=0, progress_total=int(count))
    session.add(job)
    session.flush()
    return job


#: Progress of the jobs minting in this process, job id -> cards stored (on SQLite the minting transaction holds
#: the only write lock, so progress cannot be written until it commits: it is read from here meanwhile).
_live: dict[int, int] = {}


def job_json(job: MintJob) -> dict[str, Any]:
    done = job.progress_done
    if job.state == "minting":
        done = max(done, _live.get(job.id, 0))
    return {"id": job.id, "state": job.state, "sku": job.sku, "face_value": job.face_value,
            "currency": job.currency, "count": job.count, "expires": job.expires, "anchor": job.anchor,
            "issuer": job.issuer_address,
            "progress": {"done": done, "total": job.progress_total},
            "batch_id": job.batch_id, "error": job.error, "created_at": job.created_at.isoformat(),
            "updated_at": job.updated_at.isoformat() if job.updated_at else None}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{getattr(exc, 'code', type(exc).__name__)}: {text}"[:500]


def _set(sessions: sessionmaker[Session], job_id: int, **values: Any) -> None:
    with sessions.begin() as session:
        session.execute(update(MintJob).where(MintJob.id == job_id).values(**values))


def run_job(sessions: sessionmaker[Session], master_key: Any, registry: Callable[[], Any] | Any, job_id: int,
            emit: Callable[[str, dict[str, Any]], Any] | None = None) -> MintJob:
    """Run (or finish) one job to ``done`` or ``failed``; its final row."""
    from issuer.anchoring import anchor_batch
    from issuer.minting import MintRequest, mint_batch

    with sessions() as session:
        job = session.get(MintJob, job_id)
        if job is None:
            raise LookupError(f"no mint job {job_id}")
        session.expunge(job)
    bind = getattr(sessions, "kw", {}).get("bind")
    write = getattr(getattr(bind, "dialect", None), "name", "sqlite") != "sqlite"
    beating = threading.Event()

    def heartbeat() -> None:
        # Other processes' runners leave a job alone while its updated_at is fresh (MintJobRunner._LEASE). On
        # SQLite the minting transaction holds the only write lock: one process serves it anyway.
        while not beating.wait(60):
            try:
                _set(sessions, job_id, updated_at=dt.datetime.now(dt.UTC))
            except Exception:  # noqa: BLE001
                pass

    if write:
        threading.Thread(target=heartbeat, name=f"mint-job-{job_id}", daemon=True).start()
    try:
        batch_id = job.batch_id
        if job.state in ("queued", "minting") or batch_id is None:
            _set(sessions, job_id, state="minting", progress_done=0, error=None)
            last = [0.0]

            def progress(phase: str, done: int, total: int) -> None:
                if phase != "store":
                    return
                _live[job_id] = min(done, job.count)
                now = time.monotonic()
                if write and (done >= total or now - last[0] >= 0.25):
                    last[0] = now
                    try:
                        _set(sessions, job_id, progress_done=min(done, job.count))
                    except Exception:  # noqa: BLE001 - progress is a hint; never fail the job over it
                        pass

            result = mint_batch(sessions, master_key, job.issuer_address,
                                MintRequest(sku=job.sku, face_value=job.face_value, currency=job.currency,
                                            count=job.count, expires=job.expires), progress=progress)
            batch_id = result.batch_id
            _set(sessions, job_id, batch_id=batch_id, progress_done=job.count,
                 state="anchoring" if job.anchor else "done")
        if job.anchor:
            _set(sessions, job_id, state="anchoring")
            reg = registry() if callable(registry) else registry
            anchor_batch(sessions, reg, batch_id)
            _set(sessions, job_id, state="done", progress_done=job.count)
        kind = "mint_job.done"
        _live.pop(job_id, None)
    except Exception as exc:  # noqa: BLE001 - the job records why it failed
        log.warning("mint job %d failed: %s", job_id, _one_line(exc))
        _set(sessions, job_id, state="failed", error=_one_line(exc))
        kind = "mint_job.failed"
        _live.pop(job_id, None)
    finally:
        beating.set()
    with sessions() as session:
        job = session.get(MintJob, job_id)
        session.expunge(job)
    if emit is not None:
        try:
            emit(kind, {"job_id": job.id, "state": job.state, "sku": job.sku, "count": job.count,
                        "batch_id": job.batch_id, "error": job.error})
        except Exception as exc:  # noqa: BLE001 - a webhook never fails a job
            log.warning("mint job %d: webhook not stored: %s", job_id, type(exc).__name__)
    return job


class MintJobRunner:
    """One background thread running the jobs of the database, oldest first (see the module's doc)."""

    def __init__(self, sessions: sessionmaker[Session], master_key: Any, registry: Callable[[], Any] | Any, *,
                 emit: Callable[[str, dict[str, Any]], Any] | None = None, poll: float = 5.0) -> None:
        self.sessions, self.master_key, self.registry, self.emit = sessions, master_key, registry, emit
        self.poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MintJobRunner:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cardproof-mint-jobs", daemon=True)
            self._thread.start()
        return self

    def submit(self, job_id: int | None = None) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _next(self) -> int | None:
        with self.sessions() as session:
            for job_id in session.scalars(select(MintJob.id).where(
                    MintJob.state.in_(("queued", "minting", "anchoring"))).order_by(MintJob.id).limit(1)):
                return job_id
        return None

    def _loop(self) -> None:
        # Several processes may serve: a job is claimed by moving it out of its state (queued/minting/anchoring)
        # into itself with a fresh updated_at; the runner that wins the update runs it.
        failing = False
        while not self._stop.is_set():
            try:
                if self._adopt:
                    self._find_orphans()
                job_id = self._claim()
                failing = False
            except Exception as exc:  # noqa: BLE001 - the database may be down: once per streak
                if not failing:
                    log.warning("mint job runner: %s (trying again)", type(exc).__name__)
                failing = True
                job_id = None
            if job_id is not None:
                run_job(self.sessions, self.master_key, self.registry, job_id, self.emit)
                continue
            self._wake.wait(self.poll)
            self._wake.clear()

    _LEASE = 600.0

    def _claim(self) -> int | None:
        now = dt.datetime.now(dt.UTC)
        with self.sessions() as session:
            rows = session.execute(select(MintJob.id, MintJob.state, MintJob.updated_at).where(
                MintJob.state.in_(("queued", "minting", "anchoring"))).order_by(MintJob.id).limit(20)).all()
            for job_id, state, updated in rows:
                # A job another live runner drives (updated within the lease) is left alone, unless it is queued.
                if state != "queued" and updated is not None and (now - updated).total_seconds() < self._LEASE \
                        and job_id not in self._orphans:
                    continue
                took = session.execute(update(MintJob).where(MintJob.id == job_id, MintJob.state == state,
                                                             MintJob.updated_at == updated)
                                       .values(state="minting" if state == "queued" else state, updated_at=now))
                session.commit()
                if took.rowcount == 1:
                    return job_id
        return None

    #: Jobs found unfinished when this runner started (a previous process stopped while running them).
    _orphans: frozenset[int] = frozenset()

    _adopt = False

    def adopt_orphans(self) -> MintJobRunner:
        """Take over the jobs left running by a stopped process (call before :meth:`start`, at service start;
        they are looked up by the runner's thread, once the database answers)."""
        self._adopt = True
        return self

    def _find_orphans(self) -> None:
        with self.sessions() as session:
            self._orphans = frozenset(session.scalars(select(MintJob.id).where(
                MintJob.state.in_(("minting", "anchoring")))))
        self._adopt = False
