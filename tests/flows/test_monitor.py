"""The drift check's Prefect artifact: the estimated accuracy, and beside it the measured one."""

from __future__ import annotations

from flows.monitor import accuracy_text


def test_the_drift_check_shows_the_estimate_beside_the_accuracy_measured_on_labels():
    estimated = {"estimated_accuracy": 0.8, "estimated_accuracy_low": 0.78, "estimated_accuracy_high": 0.82}
    assert accuracy_text(estimated) == "Estimated accuracy without labels: 0.800 [0.780, 0.820]. "
    labelled = estimated | {"labelled": 40.0, "online_accuracy": 0.775}
    assert accuracy_text(labelled) == (
        "Estimated accuracy without labels: 0.800 [0.780, 0.820]; measured on 40 labelled predictions: 0.775. "
    )
    assert accuracy_text({"online_accuracy": 0.9, "labelled": 40.0}) == ""  # a champion without the estimate
