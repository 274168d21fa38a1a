#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks into .whl/ (ignored by git; the device tool carries it):
# Keras and the two of its dependencies that image does not hold, pydicom (imported by pipeline.data.imaging) and
# tensorboardX (train's TensorBoard logs where TensorFlow is absent).
# The image already holds numpy, pandas, scipy, scikit-learn, OpenCV, h5py, absl-py, rich, ml-dtypes, packaging,
# pillow and tensorboard (/work/.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 pydicom==3.0.2 tensorboardX==2.6.5)
mkdir -p .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -l .whl
du -sh .whl
