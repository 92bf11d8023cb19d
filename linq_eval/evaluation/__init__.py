"""L2: evaluation: one route from a model reference to results (the runner), the result
store, the pre-load checks shared by compare and gate, and retrieval systems for pooling."""

__all__: list[str] = []
