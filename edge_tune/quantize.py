"""Post-training int8 quantisation of an ONNX model with NNCF.

Quantising the ONNX model (not the torch one) gives standard QuantizeLinear/DequantizeLinear
ONNX that OpenVINO runs with int8 kernels; weights are stored as int8.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np


def quantize_onnx(src: str | Path, dst: str | Path, calibration: np.ndarray) -> Path:
    """Write an int8 copy of ``src`` to ``dst``, calibrated on ``calibration`` (N, C, H, W)."""
    import nncf
    import onnx

    logging.getLogger("nncf").setLevel(logging.WARNING)
    model = onnx.load(str(src))
    input_name = model.graph.input[0].name
    samples = [calibration[i:i + 1] for i in range(len(calibration))]
    dataset = nncf.Dataset(samples, lambda x: {input_name: x})
    quantized = nncf.quantize(model, dataset, subset_size=len(samples))
    onnx.save(quantized, str(dst))
    return Path(dst)
