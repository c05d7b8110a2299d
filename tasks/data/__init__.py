"""Stage 1, data: load what a `DataSpec` names (Fashion-MNIST IDX files or an image folder, plus
labelled feedback), and refuse data that would train a broken model."""

from tasks.data.dataset import Dataset
from tasks.data.loader import load_data_task, validate_data_task

__all__ = ["Dataset", "load_data_task", "validate_data_task"]
