"""L1: mteb task declarations: mteb's tasks on local copies, the classic IR collections, light
sets. Tasks import ``core`` only: never models, the runner or the registration code."""

__all__: list[str] = []
