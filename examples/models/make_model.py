#!/usr/bin/env python3
"""Build a small but real OpenVINO IR model (a CNN classifier with deterministic weights).

    make_model.py OUT_DIR [--weights-mib N] [--name NAME]

Writes OUT_DIR/NAME.xml and OUT_DIR/NAME.bin with openvino's own serializer, so the files are
exactly what an ISV ships. --weights-mib pads the final fully-connected layer so the weights file
has roughly that size (for load-time measurements on large models).
"""
import argparse
import os

import numpy as np
import openvino as ov
import openvino.opset13 as ops


def build(weights_mib: float) -> ov.Model:
    rng = np.random.default_rng(20261125)
    x = ops.parameter([1, 3, 32, 32], ov.Type.f32, name="image")
    w1 = ops.constant(rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.2)
    y = ops.convolution(x, w1, [1, 1], [1, 1], [1, 1], [1, 1])
    y = ops.relu(y)
    y = ops.max_pool(y, [2, 2], [1, 1], [0, 0], [0, 0], [2, 2]).output(0)
    w2 = ops.constant(rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1)
    y = ops.convolution(y, w2, [1, 1], [1, 1], [1, 1], [1, 1])
    y = ops.relu(y)
    y = ops.reshape(y, ops.constant(np.array([1, -1], dtype=np.int64)), False)  # 1 x 8192
    features = 32 * 16 * 16
    # Hidden width chosen so the FC weights take about weights_mib MiB (at least 64 units).
    hidden = max(64, int(weights_mib * 1024 * 1024 / 4 / features))
    w3 = ops.constant(rng.standard_normal((features, hidden)).astype(np.float32) * 0.01)
    y = ops.relu(ops.matmul(y, w3, False, False))
    w4 = ops.constant(rng.standard_normal((hidden, 10)).astype(np.float32) * 0.05)
    y = ops.softmax(ops.matmul(y, w4, False, False), 1)
    y.get_output_tensor(0).set_names({"scores"})
    return ov.Model([y], [x], "ovsa-demo-cnn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--weights-mib", type=float, default=4.0)
    ap.add_argument("--name", default="model")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    xml = os.path.join(a.out_dir, a.name + ".xml")
    ov.save_model(build(a.weights_mib), xml, compress_to_fp16=False)
    print(f"wrote {xml} and {a.name}.bin ({os.path.getsize(xml[:-4] + '.bin')} bytes of weights)")


if __name__ == "__main__":
    main()
