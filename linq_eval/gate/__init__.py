"""L3: ``linq-eval baseline save`` and ``linq-eval gate``: non-inferiority against a baseline."""

__all__: list[str] = []
