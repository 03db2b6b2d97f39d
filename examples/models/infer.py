#!/usr/bin/env python3
"""Run the demo CNN with OpenVINO on a fixed input and print its scores.

    infer.py MODEL.xml [--compare OTHER.xml]

With --compare, runs both models on the same input (f32 precision) and exits non-zero unless the
outputs are identical: used to show a decrypted model behaves exactly like the original.
"""
import argparse
import sys

import numpy as np
import openvino as ov


def run(core: ov.Core, xml: str) -> np.ndarray:
    compiled = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    image = np.random.default_rng(7).random((1, 3, 32, 32), dtype=np.float32)
    return compiled(image)[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--compare")
    a = ap.parse_args()
    core = ov.Core()
    out = run(core, a.model)
    print(f"{a.model}: top class {int(out.argmax())}, scores {np.round(out[0], 4).tolist()}")
    if a.compare:
        other = run(core, a.compare)
        same = np.array_equal(out, other)
        print(f"{a.compare}: top class {int(other.argmax())}; outputs identical: {same}")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
