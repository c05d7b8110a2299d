"""The course's reference server: Flask's development server calling `model.predict()` per request.

Only the baseline for benchmarks/bench_serving.py; never used in production.
"""

from __future__ import annotations

import argparse

import numpy as np
from flask import Flask, jsonify, request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a .keras file")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()

    import keras

    model = keras.models.load_model(args.model)
    app = Flask(__name__)

    @app.get("/models/clothes/v1")
    def info():
        return jsonify({"version": 1, "name": "clothes", "number_of_parameters": model.count_params()})

    @app.post("/models/clothes/v1")
    def classify():
        image = np.array(request.get_json()["image"], dtype=np.float32) / 255.0
        result = model.predict(image.reshape(1, 28, 28, 1), verbose=0)
        return jsonify({"result": result.tolist()})

    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
