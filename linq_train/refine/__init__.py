"""``linq-train refine``: craft -> leakage guard -> teacher -> filter -> mine -> synthetic."""

__all__: list[str] = []
