#!/usr/bin/env bash
# The quick start: builds the embgen image and starts it, then waits until it is
# healthy and prints the URL and a first request to try.
#
#   ./scripts/start_container.sh
#   MAX_BATCH_SIZE=64 MAX_SEQUENCE_LENGTH=128 ./scripts/start_container.sh
#
# Uses docker compose (docker-compose.yml: 4 GB limit, 2 GB reservation, restart on
# failure, a volume for the model cache) when available, else `docker run` with the
# same settings. EMBGEN_BUILD_TARGET=prebuilt packs a binary built on the host
# instead of compiling in the image (for machines that cannot pull the Rust image).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${PORT:-8000}
image=${EMBGEN_IMAGE:-embgen:latest}
target=${EMBGEN_BUILD_TARGET:-runtime}
if [ "$target" = prebuilt ]; then
  cargo build --release --quiet -p embgen
fi
docker build --target "$target" -t "$image" .

export PORT=$port
if docker compose version >/dev/null 2>&1; then
  docker compose up -d --no-build
  container=$(docker compose ps -q embgen)
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose --compatibility up -d --no-build
  container=$(docker-compose ps -q embgen)
else
  docker rm -f embgen >/dev/null 2>&1 || true
  env_args=()
  for v in MAX_BATCH_SIZE MAX_SEQUENCE_LENGTH MAX_BATCH_TOKENS MAX_TEXTS_PER_REQUEST THREADS \
           DEFAULT_MODEL HF_TOKEN HF_HUB_OFFLINE API_KEY LOG_LEVEL LOG_FORMAT CORS_ALLOW_ORIGINS; do
    [ -n "${!v:-}" ] && env_args+=(-e "$v=${!v}")
  done
  container=$(docker run -d --name embgen -p "$port:8000" \
    --memory 4g --memory-reservation 2g --restart on-failure \
    -v embgen-hf-cache:/data/huggingface "${env_args[@]}" "$image")
fi

echo "waiting for embgen to become healthy (the first start downloads the model)..."
for _ in $(seq 1 180); do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$container" 2>/dev/null || echo starting)
  [ "$status" = healthy ] && break
  if [ "$status" = unhealthy ] || [ "$(docker inspect --format '{{.State.Running}}' "$container")" != true ]; then
    docker logs --tail 30 "$container" >&2
    echo "embgen did not become healthy" >&2
    exit 1
  fi
  sleep 2
done
echo "embgen is up at http://localhost:$port  (docs: http://localhost:$port/docs)"
echo "try:"
echo "  curl -X POST http://localhost:$port/embeddings -H 'Content-Type: application/json' -d '{\"texts\": [\"Hello world\"]}'"
