"""Stage 1, data: load what a `DataSpec` names (Fashion-MNIST IDX files or an image folder, plus
labelled feedback), refuse data that would train a broken model, and record the data's lineage on the
run. Also the disturbances (rotation, shift, lighting) training's copies and evaluation's slices share."""

from tasks.data.dataset import Dataset
from tasks.data.lineage import log_dataset_task
from tasks.data.loader import load_data_task, validate_data_task

__all__ = ["Dataset", "load_data_task", "log_dataset_task", "validate_data_task"]
