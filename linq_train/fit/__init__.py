"""``linq-train fit``: LoRA contrastive training in stages on sentence-transformers' trainer."""

__all__: list[str] = []
