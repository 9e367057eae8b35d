#!/bin/sh
# Image build step, the one way Ralex's images install Python packages: a new venv holding exactly
# the lock given (a `uv export` with hashes): no resolution (--no-deps), every file pinned by hash,
# wheels only (nothing is built with whatever build tools the index has that day), then `pip check`
# proves the set complete. The same on any pip the base image ships.
#   install-lock.sh VENV REQUIREMENTS
set -eu
venv="$1"; requirements="$2"
python3 -m venv "$venv"
PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    "$venv/bin/pip" install --no-deps --require-hashes --only-binary :all: -r "$requirements"
"$venv/bin/pip" check
