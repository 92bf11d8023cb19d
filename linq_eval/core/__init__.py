"""L0: specifications and statistics. Imports neither torch nor mteb (tests check it): paths and
environment variables, digests and atomic writes, instructions, precisions, local data readers,
light manifests and baselines as schemas, per-query score files, statistics and the gate rule."""

__all__: list[str] = []
