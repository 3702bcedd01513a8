"""The job state machine, in process on SQLite: guarded transitions, the attempt number as a
fencing token, the lease keeper, the sweeper, and the task's output handling (with the
pipeline replaced by a stub, so these run in seconds)."""

from __future__ import annotations

import errno
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from jobs import state as jobstate
from jobs import sweeper
from jobs.db import make_engine, make_sessionmaker
from jobs.models import Base, ClassReport, Job, JobStatus, utcnow
from jobs.settings import Settings
from jobs.state import Claim, LeaseLost
from jobs.storage import job_dir, out_dir, upload_path
from worker import tasks
from worker.lease import LeaseKeeper
from worker.progress import JobCanceled, ProgressWriter

pytestmark = pytest.mark.timeout(60)

REPORT = {
    "classes": [{"name": "a", "train_count": 3, "synthetic_count": 2, "test_count": 1}],
    "methods": {"gan": {"per_class": {"a": {"accuracy": 1.0, "f1": 1.0}}}},
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(
        data_dir=tmp_path,
        database_url="",
        broker_url="",
        lease_s=2.0,
        heartbeat_interval_s=0.2,
        max_attempts=2,
        resend_queued_after_s=5.0,
    )
    s.ensure_dirs()
    return s


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(settings.database_url)
    Base.metadata.create_all(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def new_job(sessions: sessionmaker[Session], settings: Settings) -> Callable[..., uuid.UUID]:
    def make(**values: object) -> uuid.UUID:
        job_id = uuid.uuid4()
        upload_path(settings, job_id).parent.mkdir(parents=True)
        upload_path(settings, job_id).write_bytes(b"zip")
        with sessions.begin() as session:
            session.add(Job(id=job_id, config={}, owner="t", **values))
        return job_id

    return make


def load(sessions: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def claim(sessions: sessionmaker[Session], job_id: uuid.UUID, settings: Settings) -> Claim:
    got = jobstate.claim(sessions, job_id, "w1", settings.lease_s, settings.max_attempts)
    assert got is not None
    return got


def expire_lease(sessions: sessionmaker[Session], job_id: uuid.UUID) -> None:
    past = utcnow() - timedelta(seconds=1)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=past))


# --- claims and fencing ---------------------------------------------------------------------


def test_claim_starts_a_queued_job_once(sessions, settings, new_job) -> None:  # noqa: ANN001
    job_id = new_job()
    first = claim(sessions, job_id, settings)
    assert first.attempt == 1
    job = load(sessions, job_id)
    assert (job.status, job.attempts, job.worker_id) == ("running", 1, "w1")
    assert job.lease_expires_at > utcnow() and job.heartbeat_at is not None
    # A redelivered message for a running job (live lease) or a finished one does nothing.
    assert jobstate.claim(sessions, job_id, "w2", 2.0, 2) is None
    assert jobstate.finish(sessions, first, JobStatus.failed, "x")
    assert jobstate.claim(sessions, job_id, "w2", 2.0, 2) is None
    assert load(sessions, job_id).attempts == 1


def test_a_stale_attempt_can_neither_write_nor_finish(sessions, settings, new_job) -> None:  # noqa: ANN001
    job_id = new_job()
    old = claim(sessions, job_id, settings)
    expire_lease(sessions, job_id)
    assert sweeper.sweep(sessions, settings, lambda _: None).requeued == 1
    new = claim(sessions, job_id, settings)
    assert new.attempt == 2

    assert not jobstate.heartbeat(sessions, old, settings.lease_s, "training_gan", 0.9).held
    assert not jobstate.finish(sessions, old, JobStatus.failed, "late")
    assert not jobstate.succeed(sessions, old, REPORT)
    job = load(sessions, job_id)
    assert (job.status, job.attempts, job.stage, job.error) == ("running", 2, "validating", None)
    with sessions() as session:
        assert session.query(ClassReport).count() == 0

    assert jobstate.succeed(sessions, new, REPORT)
    assert load(sessions, job_id).status == "succeeded"


def test_claim_refuses_a_canceled_job_and_fails_one_out_of_attempts(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
) -> None:
    canceled = new_job(status="canceled", cancel_requested=True)
    assert jobstate.claim(sessions, canceled, "w", 2.0, 2) is None
    spent = new_job(attempts=2)
    assert jobstate.claim(sessions, spent, "w", 2.0, 2) is None
    job = load(sessions, spent)
    assert job.status == "failed" and "stopped responding 2 times" in job.error


# --- the sweeper ------------------------------------------------------------------------------


def test_sweeper_requeues_fails_after_the_cap_and_honours_cancels(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
) -> None:
    sent: list[uuid.UUID] = []
    live, dead, spent, canceled = new_job(), new_job(), new_job(), new_job()
    for job_id in (live, dead, spent, canceled):
        claim(sessions, job_id, settings)
    with sessions.begin() as session:
        session.execute(update(Job).where(Job.id == spent).values(attempts=2))
        session.execute(update(Job).where(Job.id == canceled).values(cancel_requested=True))
    for job_id in (dead, spent, canceled):
        expire_lease(sessions, job_id)
    (out_dir(settings, spent) / "x").parent.mkdir(parents=True)

    report = sweeper.sweep(sessions, settings, sent.append)
    assert (report.requeued, report.failed, report.canceled) == (1, 1, 1)
    assert sent == [dead]
    assert load(sessions, live).status == "running"
    requeued = load(sessions, dead)
    assert (requeued.status, requeued.attempts, requeued.lease_expires_at) == ("queued", 1, None)
    failed = load(sessions, spent)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error.startswith("the worker running this job stopped responding 2 times")
    assert failed.error.endswith("giving up")
    assert not out_dir(settings, spent).exists()
    assert load(sessions, canceled).status == "canceled"
    # Nothing is left to do: a second sweep (another API replica) changes nothing.
    assert sweeper.sweep(sessions, settings, sent.append) == sweeper.SweepReport()
    assert sent == [dead]


def test_sweeper_resends_unclaimed_queued_jobs_once_per_period(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
) -> None:
    sent: list[uuid.UUID] = []
    old = utcnow() - timedelta(seconds=settings.resend_queued_after_s + 1)
    lost, fresh, legacy = new_job(enqueued_at=old), new_job(), new_job(enqueued_at=None)
    with sessions.begin() as session:  # a row from before enqueued_at existed
        session.execute(update(Job).where(Job.id == legacy).values(enqueued_at=None))
    assert sweeper.sweep(sessions, settings, sent.append).resent == 2
    assert set(sent) == {lost, legacy} and fresh not in sent
    assert load(sessions, lost).enqueued_at > old
    assert sweeper.sweep(sessions, settings, sent.append).resent == 0


def test_sweeper_retries_a_send_that_failed(sessions, settings, new_job) -> None:  # noqa: ANN001
    job_id = new_job()
    claim(sessions, job_id, settings)
    expire_lease(sessions, job_id)

    def broker_down(_: uuid.UUID) -> None:
        raise ConnectionError("broker down")

    assert sweeper.sweep(sessions, settings, broker_down).requeued == 1
    assert load(sessions, job_id).status == "queued"
    sent: list[uuid.UUID] = []
    assert sweeper.sweep(sessions, settings, sent.append).resent == 1
    assert sent == [job_id]


# --- the lease keeper and the progress callback ----------------------------------------------


def raises_soon(progress: ProgressWriter, error: type[Exception], within_s: float = 5.0) -> None:
    """The callback raises `error` within a few calls: a call skips its write while the keeper
    thread is in the middle of one, and learns of the change at the next."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            progress("training_gan", 0.3)
        except error:
            return
        time.sleep(0.05)
    pytest.fail(f"the progress callback did not raise {error.__name__}")


def test_the_keeper_renews_the_lease_and_progress_stops_on_cancel(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
) -> None:
    job_id = new_job()
    got = claim(sessions, job_id, settings)
    with LeaseKeeper(sessions, got, settings.lease_s, settings.heartbeat_interval_s) as keeper:
        progress = ProgressWriter(keeper, 0.0)
        progress("training_gan", 0.2)
        assert load(sessions, job_id).stage == "training_gan"
        before = load(sessions, job_id).lease_expires_at
        time.sleep(settings.heartbeat_interval_s * 3)
        assert load(sessions, job_id).lease_expires_at > before, "the thread renews the lease"
        with sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
        raises_soon(progress, JobCanceled)


def test_progress_stops_on_a_lost_fence(sessions, settings, new_job) -> None:  # noqa: ANN001
    job_id = new_job()
    got = claim(sessions, job_id, settings)
    with LeaseKeeper(sessions, got, settings.lease_s, settings.heartbeat_interval_s) as keeper:
        progress = ProgressWriter(keeper, 0.0)
        progress("training_gan", 0.2)
        with sessions.begin() as session:  # the sweeper took it back and someone claimed it
            session.execute(update(Job).where(Job.id == job_id).values(attempts=2))
        raises_soon(progress, LeaseLost)
        with pytest.raises(LeaseLost):
            progress("training_classifier", 0.5)
    assert load(sessions, job_id).progress == pytest.approx(0.2), "no write after the loss"


def test_the_lease_runs_out_while_the_database_is_unreachable(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    got = claim(sessions, new_job(), settings)

    def down(*_: object, **__: object) -> None:
        from sqlalchemy.exc import OperationalError

        raise OperationalError("UPDATE", {}, Exception("connection refused"))

    monkeypatch.setattr(jobstate, "heartbeat", down)
    keeper = LeaseKeeper(sessions, got, 0.6, 0.1)
    with keeper:
        assert keeper.stop_reason() is None  # keeps working while the granted lease lasts
        time.sleep(0.8)
        assert keeper.stop_reason() == "lease-lost"


def test_a_job_hung_past_its_hard_limit_stops_renewing_its_lease(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
) -> None:
    """A threads-pool worker cannot kill a hung job: its lease lapses instead, and the
    sweeper takes the job back."""
    job_id = new_job()
    got = claim(sessions, job_id, settings)
    with LeaseKeeper(sessions, got, 0.6, 0.1, renew_for_s=0.3) as keeper:
        claimed = load(sessions, job_id).heartbeat_at
        time.sleep(0.4)
        last = load(sessions, job_id).heartbeat_at
        assert last > claimed, "renewed before the limit"
        time.sleep(1.0)  # past the limit and past the last lease granted
        assert load(sessions, job_id).heartbeat_at == last, "no renewal after the limit"
        assert keeper.stop_reason() == "lease-lost"
        assert load(sessions, job_id).lease_expires_at < utcnow()


# --- the task: per-attempt folders, publication, failures ------------------------------------


def fake_pipeline(behaviour: Callable[[Path, ProgressWriter], None]):  # noqa: ANN201
    def run(
        settings: Settings, claim: Claim, work: Path, progress: ProgressWriter, upload: Path
    ) -> dict:
        work.mkdir(parents=True)
        (work / "report.json").write_text("{}")
        behaviour(work, progress)
        return REPORT

    return run


def test_outputs_are_published_only_by_a_finished_attempt(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    job_id = new_job()
    stale = job_dir(settings, job_id) / "attempt-7"  # left by a worker that died
    stale.mkdir(parents=True)
    seen: list[bool] = []

    def behaviour(work: Path, progress: ProgressWriter) -> None:
        progress("training_gan", 0.5)
        seen.append(out_dir(settings, job_id).exists())

    monkeypatch.setattr(tasks, "_run_pipeline", fake_pipeline(behaviour))
    tasks.run(settings, sessions, job_id)
    assert seen == [False], "nothing in out/ while the attempt runs"
    assert load(sessions, job_id).status == "succeeded"
    assert (out_dir(settings, job_id) / "report.json").is_file()
    assert sorted(p.name for p in job_dir(settings, job_id).iterdir()) == ["out", "upload.zip"]


def test_a_worker_that_lost_its_job_writes_nothing(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    job_id = new_job()

    def taken_over(work: Path, progress: ProgressWriter) -> None:
        with sessions.begin() as session:  # the sweeper re-queued it, another worker claimed it
            session.execute(update(Job).where(Job.id == job_id).values(attempts=2))
        progress("training_classifier", 0.9)

    monkeypatch.setattr(tasks, "_run_pipeline", fake_pipeline(taken_over))
    tasks.run(settings, sessions, job_id)
    job = load(sessions, job_id)
    assert (job.status, job.attempts, job.stage) == ("running", 2, "validating")
    assert not out_dir(settings, job_id).exists()
    assert not (job_dir(settings, job_id) / "attempt-1").exists()


def test_a_full_disk_fails_the_job_with_a_message(
    sessions,  # noqa: ANN001
    settings,  # noqa: ANN001
    new_job,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    job_id = new_job()

    def disk_full(work: Path, progress: ProgressWriter) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tasks, "_run_pipeline", fake_pipeline(disk_full))
    tasks.run(settings, sessions, job_id)
    job = load(sessions, job_id)
    assert job.status == "failed" and "ran out of disk space" in job.error
    assert job.lease_expires_at is None
    assert sorted(p.name for p in job_dir(settings, job_id).iterdir()) == ["upload.zip"]
