#!/usr/bin/env bash
# The OpenAPI document the server keeps: schemathesis runs every check over every
# operation against the real binary on 127.0.0.1, with a fixed seed and a bounded
# number of examples, and fails on any 5xx or any conformance failure.
#
# Needs the test cache (scripts/fetch-test-models.sh) and a release build; installs
# schemathesis into .cache/venv-schemathesis. Run by scripts/test.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.cache/venv-schemathesis
req=tests/schemathesis/requirements.txt
if [ ! -x "$venv/bin/schemathesis" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
  cp "$req" "$venv/requirements.txt"
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
HOST=127.0.0.1 PORT=$port HF_HOME=${EMBGEN_HF_HOME:-$root/.cache/hf} HF_HUB_OFFLINE=1 \
  MODEL_DIRS=$root/crates/engine/tests/fixtures/models LOG_LEVEL=warn \
  ./target/release/embgen serve 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  sleep 0.2
done
"$venv/bin/schemathesis" --config-file tests/schemathesis/schemathesis.toml run \
  "http://127.0.0.1:$port/openapi.json" \
  --checks all --seed 20261125 --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" \
  --generation-deterministic --workers 1 --request-timeout 30 --no-color
kill -0 $server || { echo "embgen died during the run:"; cat "$log"; exit 1; }
