"""Subject names and stream names: the only place their tokens are spelled."""

from __future__ import annotations

RUN_EVENTS_STREAM = "RUN_EVENTS"
RUN_EVENTS_SUBJECTS = "run.*.events"

COMMANDS_STREAM = "COMMANDS"
COMMANDS_SUBJECTS = "cmd.>"
START_RUN = "cmd.run.start"
RESUME_RUN = "cmd.run.resume"

JOBS_STREAM = "JOBS"
JOBS_SUBJECTS = "job.>"

DLQ_STREAM = "DEAD_LETTERS"
DLQ_SUBJECTS = "dlq.>"

BILLING_RESERVE = "billing.reserve"
BILLING_COMMIT = "billing.commit"
BILLING_RELEASE = "billing.release"

ARTIFACTS_BUCKET = "artifacts"


def run_events(run_id: str) -> str:
    """The subject holding every event of one run."""
    return f"run.{run_id}.events"


def run_id_of(subject: str) -> str:
    """Inverse of `run_events`."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != "run" or parts[2] != "events":
        raise ValueError(f"not a run events subject: {subject!r}")
    return parts[1]


def deliverable_job(kind: str) -> str:
    return f"job.deliverable.{kind}"


def dead_letter(stream: str, consumer: str) -> str:
    return f"dlq.{stream}.{consumer}"
