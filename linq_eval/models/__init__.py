"""L1: models: the one loader ``build_model``, model references (``pypi:``), the mteb encoder
and the ``linq`` entries for mteb's model registry (declared, not written: see registry)."""

__all__: list[str] = []
