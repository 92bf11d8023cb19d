"""A light task's metadata: its parent's, with descriptive statistics read from ``tasks_light/``.

Kept apart from ``light_tasks`` because it imports mteb at module level; only ``light_tasks`` imports it,
inside functions, once mteb is loaded.
"""

from __future__ import annotations

from pathlib import Path

from mteb.abstasks.task_metadata import TaskMetadata

from linq_eval.core.light_manifest import stats_path


class LightTaskMetadata(TaskMetadata):
    """mteb reads descriptive statistics from its own package; ours ship beside the manifests."""

    @property
    def descriptive_stat_path(self) -> Path:
        return stats_path(self.name)
