#!/usr/bin/env bash
# Refresh the hash-locked requirements (`make lock`): requirements/runtime.txt (what the image
# installs), requirements/build.txt (what builds the project's wheel) and requirements/dev.txt
# (the development venv, constrained to runtime.txt so both install the same versions).
#
# uv runs from a throwaway venv, so the lock tool never reaches the project's venv or the image.
# It resolves for the target (Python 3.11 on Linux), not for the interpreter that runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION="${UV_VERSION:-0.13.8}"
PYTHON="${PYTHON:-python3}"
TARGET=(--python-version 3.11 --python-platform linux)

tool_dir="$(mktemp -d)"
trap 'rm -rf "$tool_dir"' EXIT
"$PYTHON" -m venv "$tool_dir"
"$tool_dir/bin/python" -m pip install --quiet "uv==$UV_VERSION"

compile() {
  "$tool_dir/bin/uv" pip compile --quiet --generate-hashes "${TARGET[@]}" \
    --custom-compile-command "make lock" "$@"
}

compile pyproject.toml -o requirements/runtime.txt
"$PYTHON" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
  | compile - -o requirements/build.txt
compile requirements/dev.in -c requirements/runtime.txt \
  --no-emit-package kvkit --no-emit-package kvclient -o requirements/dev.txt
