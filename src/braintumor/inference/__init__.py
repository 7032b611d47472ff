"""Inference: the one forward path (`forward`), `Predictor` for files and in-memory images, the
onnxruntime runtime and ONNX export, int8 quantization, the out-of-distribution detector, and
Grad-CAM explanations; `summarise_volume` sums up the slice predictions of a NIfTI volume.

``from braintumor.inference import Predictor`` imports neither torch nor timm: with the ONNX graph
cached, prediction starts in well under a second.
"""

from braintumor.inference.predictor import Prediction, Predictor
from braintumor.inference.volume import VolumeSummary, summarise_volume, summarise_volumes

__all__ = ["Prediction", "Predictor", "VolumeSummary", "summarise_volume", "summarise_volumes"]
