"""L3: ``linq-eval compare``: precisions (and checkpoints) against a reference, per task."""

__all__: list[str] = []
