"""The deliverables service: idempotent jobs that render a run's content model to a report,
a website and a slide deck, stored as artifacts in a JetStream object store.

- `service`: the replica (`python -m runloom.deliverables`): `run(settings)`; `jobs()` declares
  the consumer of `job.deliverable.>`.
- `jobs`: `JobRunner`, one job from claim to `deliverable.ready` / `deliverable.failed`.
- `render`: the renderers (Markdown, HTML, PDF, DOCX, website, PPTX, HTML deck).
- `store`: `ArtifactStore`, artifacts in the object store; `options`: `Options`.
"""

from runloom.deliverables.jobs import JobRunner, artifact_id
from runloom.deliverables.options import Options
from runloom.deliverables.service import jobs, run
from runloom.deliverables.store import ArtifactStore

__all__ = ["ArtifactStore", "JobRunner", "Options", "artifact_id", "jobs", "run"]
