"""Datasets: TFDS builders (array_record, no TensorFlow), mocap loading, rendering, pipelines."""
