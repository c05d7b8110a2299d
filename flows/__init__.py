"""Prefect flows composing the stages in `tasks`."""

from tasks.settings import apply_runtime_defaults

# First thing, before Prefect reads its settings or TensorFlow starts: the same environment whether
# a flow runs from `make`, a console script or a worker.
apply_runtime_defaults()
