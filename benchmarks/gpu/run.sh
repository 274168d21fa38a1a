#!/usr/bin/env bash
# GPU proof kit, on the machine that runs it: install the carried wheels and the project, then run proof.py
# under JAX. Arguments go to proof.py (see benchmarks/gpu/README.md). Uses $PYTHON (default python3) and the
# wheels in $KIT_WHEELS (default .whl, made by wheels.sh for the GPU machine's Python 3.12; none: install none).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
SITE=${KIT_SITE:-$(mktemp -d /tmp/gpu-kit-site.XXXX)}
WHEELS=${KIT_WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/wheels" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE/wheels${PYTHONPATH:+:$PYTHONPATH}"
fi
# The project itself, installed (no dependencies: the image's and the wheels' are used), built outside the checkout.
BUILD=$(mktemp -d /tmp/gpu-kit-build.XXXX)
cp -r pipeline pyproject.toml README.md "$BUILD"/
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE/project" "$BUILD"
rm -rf "$BUILD"
export PYTHONPATH="$SITE/project${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
"$PYTHON" benchmarks/gpu/proof.py "$@"
