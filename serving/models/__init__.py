"""The served models: discovery under the model root, the LiteRT runtime, the out-of-distribution flag."""
