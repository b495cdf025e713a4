"""A run's title, derived once from what `POST /v1/runs` was given (the create use case puts it
on `run.created`; the archive's projection falls back on it for events that carry none)."""

from __future__ import annotations

from typing import Any


def title_of(data: dict[str, Any]) -> str:
    """A run's title: the one given, else the question's first line, shortened."""
    title = data.get("title")
    if title:
        return str(title)
    question = " ".join(str(data.get("question") or "").split())
    return question if len(question) <= 80 else question[:79].rstrip() + "…"
