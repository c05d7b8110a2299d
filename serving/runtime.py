"""LiteRT (TensorFlow Lite) runtime: the exported model without TensorFlow, ~35x less fixed overhead
per call than `model.predict()` and a much smaller image."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class TFLiteModel:
    """Thread-safe: LiteRT interpreters are not, so each thread gets its own over the shared model bytes."""

    def __init__(self, model_path: Path, num_threads: int = 1) -> None:
        self.model_path = Path(model_path)
        self._content = self.model_path.read_bytes()
        self._num_threads = num_threads
        self._local = threading.local()

    def _interpreter(self):
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=self._content, num_threads=self._num_threads)
            interpreter.allocate_tensors()
            self._local.interpreter = interpreter
            self._local.input = interpreter.get_input_details()[0]
            self._local.output = interpreter.get_output_details()[0]
            self._local.batch = int(self._local.input["shape"][0])
        return interpreter

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, 28, 28, 1) float32 in 0-1 -> (N, classes) probabilities."""
        interpreter = self._interpreter()
        local = self._local
        if batch.shape[0] != local.batch:
            interpreter.resize_tensor_input(local.input["index"], list(batch.shape))
            interpreter.allocate_tensors()
            local.batch = batch.shape[0]
        interpreter.set_tensor(local.input["index"], np.ascontiguousarray(batch, dtype=np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(local.output["index"]).copy()
