"""The wire formats the server speaks, each a thin adapter over the one data plane: the course's REST
contract (`course`), TensorFlow Serving's REST API (`tf_serving`), the Open Inference Protocol v2
(`oip`), and what all clients share (`service`: health, metrics, the OpenAPI document)."""
