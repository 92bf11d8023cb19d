"""L3: light sets: build a manifest, validate it against the full task, report."""

__all__: list[str] = []
