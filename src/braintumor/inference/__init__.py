"""Inference: the one forward path (`forward`), `Predictor` for files and in-memory images, the
onnxruntime runtime and ONNX export, int8 quantization, the out-of-distribution detector, and
Grad-CAM explanations.

``from braintumor.inference import Predictor`` imports neither torch nor timm: with the ONNX graph
cached, prediction starts in well under a second.
"""

from braintumor.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
