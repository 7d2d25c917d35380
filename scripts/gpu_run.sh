#!/usr/bin/env bash
# The device run for the README's GPU figures (one prepared call, `run` tool of the session's device machine, which
# has Python 3.12, JAX and PyTorch but no TensorFlow and no package index). Carried: build/gpu-wheels (keras and
# what scripts.gpu_check imports beyond numpy, downloaded here with `pip download --only-binary=:all:
# --python-version 3.12 ...`) and build/gpu-check (a bundle, the 10% file, reference scores made here on
# TensorFlow with `python -m scripts.gpu_check reference --limit 300000`). Writes $OUT/jax.json and $OUT/torch.json.
set -uo pipefail
OUT=${OUT:-build/gpu-out}
mkdir -p "$OUT"
python3 -m venv --system-site-packages /tmp/gpu-venv
/tmp/gpu-venv/bin/pip install -q --no-index --no-deps --find-links build/gpu-wheels keras namex optree rich pygments \
  h5py absl-py pandas pydantic pydantic-core pydantic-settings annotated-types markdown-it-py mdurl python-dateutil \
  python-dotenv typing-inspection tzdata 2>&1 | tail -3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
export PYTHONUNBUFFERED=1
for backend in jax torch; do
  KERAS_BACKEND=$backend timeout 200 /tmp/gpu-venv/bin/python -m scripts.gpu_check run --bundle build/gpu-check/model \
    --data build/gpu-check/kddcup.data_10_percent.gz --limit 300000 --reference build/gpu-check/reference.npz \
    > "$OUT/$backend.json" 2> "$OUT/$backend.log"
  echo "$backend: exit $?"; tail -1 "$OUT/$backend.json"; grep -E "batch|Error|error" "$OUT/$backend.log" | tail -8
done
