#!/usr/bin/env bash
# Validates the Kubernetes manifests against the Kubernetes schemas, offline
# (kubernetes-validate carries them), in a virtualenv of its own.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.cache/venv-deploy
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
"$venv/bin/kubernetes-validate" --strict "$root"/deploy/kubernetes/*.yaml
