"""NannyML's multiclass CBPE on the shifts `bench_estimate.py` wrote: run in NannyML's own environment
(`make bench-estimate` makes it: its pins clash with the project's), it reads one .npz and prints one
JSON object, shift -> estimated accuracy. Fitted on the validation split's probabilities and labels,
as NannyML's reference period; each shift is one analysis chunk."""

from __future__ import annotations

import json
import sys
import warnings

import nannyml as nml
import numpy as np
import pandas as pd


def frame(probabilities: np.ndarray, labels: np.ndarray | None = None) -> pd.DataFrame:
    data = pd.DataFrame({f"p{k}": probabilities[:, k] for k in range(probabilities.shape[1])})
    data["predicted"] = probabilities.argmax(axis=1)
    if labels is not None:
        data["label"] = labels
    return data


def main(path: str) -> None:
    warnings.simplefilter("ignore")
    arrays = np.load(path)
    classes = arrays["reference_probabilities"].shape[1]
    cbpe = nml.CBPE(
        y_pred_proba={k: f"p{k}" for k in range(classes)},
        y_pred="predicted",
        y_true="label",
        problem_type="classification_multiclass",
        metrics=["accuracy"],
        chunk_number=1,
    )
    cbpe.fit(frame(arrays["reference_probabilities"], arrays["reference_labels"]))
    estimated = {}
    for key in arrays.files:
        if key.startswith("shift:"):
            result = cbpe.estimate(frame(arrays[key])).to_df()
            estimated[key.removeprefix("shift:")] = float(result[("accuracy", "value")].iloc[-1])
    print(json.dumps({"nannyml": nml.__version__, "estimates": estimated}))


if __name__ == "__main__":
    main(sys.argv[1])
