#!/usr/bin/env bash
# Builds the image from the project's Dockerfile and proves it serves: healthy, correct
# embeddings, not root, and a clean stop on SIGTERM. Run by .ci/run.
#
# CI machines have no Docker engine running and no registry, so this installs
# docker.io and debootstrap from Debian, starts dockerd without networking of its
# own, makes the base image locally (debootstrap minbase + docker import), and packs
# the binary built on the host (`--target prebuilt`); the same Dockerfile builds from
# source where the Rust image can be pulled. The container uses host networking and
# the test model cache (scripts/fetch-test-models.sh) as its Hugging Face cache;
# traffic goes to 127.0.0.1 only. Everything it makes is removed at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
hf_home=${EMBGEN_HF_HOME:-$root/.cache/hf}
port=${SMOKE_PORT:-18080}
image=embgen:smoke
base=debian:bookworm-slim
name=embgen-smoke-$$
started_dockerd=
made_base=
rootfs=

cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker rmi -f "$image" >/dev/null 2>&1 || true
  [ -n "$made_base" ] && docker rmi -f "$base" >/dev/null 2>&1 || true
  [ -n "$rootfs" ] && rm -rf "$rootfs"
  if [ -n "$started_dockerd" ]; then kill "$started_dockerd" 2>/dev/null || true; fi
}
trap cleanup EXIT

step() { echo "== docker-smoke: $*"; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || ! command -v docker-compose >/dev/null; then
  step "installing docker.io, docker-compose and debootstrap"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap >/dev/null
fi
step "checking docker-compose.yml"
docker-compose -f docker-compose.yml config -q
if ! docker info >/dev/null 2>&1; then
  step "starting dockerd"
  dockerd --bridge=none --iptables=false >/tmp/embgen-dockerd.log 2>&1 &
  started_dockerd=$!
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
fi
if ! docker image inspect "$base" >/dev/null 2>&1; then
  step "making the base image $base with debootstrap"
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  # What Debian's own slim images leave out.
  rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  made_base=1
fi

step "building the binary and the image"
scripts/fetch-test-models.sh minilm >/dev/null
cargo build --release --quiet -p embgen
mkdir -p target/docker
strip -o target/docker/embgen target/release/embgen
docker build --network host --target prebuilt --build-arg EMBGEN_BINARY=target/docker/embgen \
  -t "$image" . >/tmp/embgen-docker-build.log 2>&1 \
  || { tail -30 /tmp/embgen-docker-build.log; exit 1; }
echo "image size: $(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}')"

step "running the container"
run_start=$(date +%s%N)
docker run -d --name "$name" --network host \
  -e PORT="$port" -e HOST=127.0.0.1 -e HF_HUB_OFFLINE=1 -e MAX_BATCH_SIZE=16 \
  --health-interval 1s --health-start-period 60s \
  -v "$hf_home:/data/huggingface:ro" "$image" >/dev/null
for _ in $(seq 1 120); do
  status=$(docker inspect --format '{{.State.Health.Status}}' "$name")
  [ "$status" = healthy ] && break
  if [ "$(docker inspect --format '{{.State.Running}}' "$name")" != true ]; then
    docker logs "$name" | tail -20; echo "container stopped"; exit 1
  fi
  sleep 0.5
done
[ "$status" = healthy ] || { docker logs "$name" | tail -20; echo "never healthy"; exit 1; }
echo "start to healthy: $(( ($(date +%s%N) - run_start) / 1000000 )) ms"

step "checking the process is not root"
uid=$(docker exec "$name" sh -c 'grep "^Uid:" /proc/1/status' | awk '{print $2}')
user=$(docker exec "$name" id -un)
echo "server runs as $user (uid $uid)"
[ "$uid" != 0 ]

step "embedding the reference texts"
python3 - "$port" "${EMBGEN_REFERENCE_DIR:-$root/../shared/reference}/all-MiniLM-L6-v2.jsonl" <<'PY'
import json, math, sys, urllib.request
port, ref_path = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(ref_path)]
body = json.dumps({"texts": [r["text"] for r in rows]}).encode()
req = urllib.request.Request(f"http://127.0.0.1:{port}/embeddings", data=body, headers={"content-type": "application/json"})
got = json.load(urllib.request.urlopen(req, timeout=120))["embeddings"]
def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
worst = min(cos(g, r["embedding"]) for g, r in zip(got, rows))
print(f"{len(got)} reference texts, min cosine {worst:.7f}")
assert len(got) == len(rows) and worst >= 0.99999, worst
PY

step "stopping with SIGTERM"
stop_start=$(date +%s%N)
docker kill --signal TERM "$name" >/dev/null
for _ in $(seq 1 100); do
  [ "$(docker inspect --format '{{.State.Running}}' "$name")" = false ] && break
  sleep 0.1
done
elapsed_ms=$(( ($(date +%s%N) - stop_start) / 1000000 ))
code=$(docker inspect --format '{{.State.ExitCode}} {{.State.Running}}' "$name")
echo "exit code and running: $code, $elapsed_ms ms after SIGTERM"
[ "$code" = "0 false" ] && [ "$elapsed_ms" -lt 10000 ]
echo "docker-smoke: passed"
