"""imgclf: image-classification experiments with Keras 3 on TensorFlow, from one YAML file."""

__version__ = "0.1.0"
