#!/usr/bin/env python3
"""Convert a model (ONNX, ...) to OpenVINO IR with openvino's own converter.

    convert.py SRC OUT_DIR [--name NAME]

Writes OUT_DIR/NAME.xml and OUT_DIR/NAME.bin (full f32 weights, no fp16 compression), e.g. for
the PP-OCR ONNX models that scripts/setup.sh --openvino extracts into .venv/ppocr/.
"""
import argparse
import os

import openvino as ov


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out_dir")
    ap.add_argument("--name", default="model")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    model = ov.convert_model(a.src)
    xml = os.path.join(a.out_dir, a.name + ".xml")
    ov.save_model(model, xml, compress_to_fp16=False)
    inputs = ", ".join(f"{i.get_any_name()} {i.get_partial_shape()}" for i in model.inputs)
    print(f"wrote {xml} ({os.path.getsize(xml[:-4] + '.bin')} bytes of weights); inputs: {inputs}")


if __name__ == "__main__":
    main()
