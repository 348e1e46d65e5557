#!/usr/bin/env bash
# Builds the three images of the deployment (context: the repository root):
#   ${IMAGE_PREFIX}covidct:${IMAGE_TAG}           docker/covidct.Dockerfile (covidct serve)
#   ${IMAGE_PREFIX}covidct-mlflow:${IMAGE_TAG}    docker/mlflow.Dockerfile (MLflow server)
#   ${IMAGE_PREFIX}covidct-monitor:${IMAGE_TAG}   docker/monitor.Dockerfile (Evidently job)
#   ${IMAGE_PREFIX}covidct-gateway:${IMAGE_TAG}   docker/gateway.Dockerfile (HAProxy, the entry)
# and writes their names to ${IMAGES_ENV:-images.env} (COVIDCT_IMAGE=…, a GitLab dotenv report
# and the input of scripts/deploy.sh). A checkout without monitoring/ (the Evidently job) gets no
# monitoring image: images.env then says MONITOR_REPLICAS=0 and the stack runs no monitor.
# Usage: scripts/build-images.sh [--push] [--label KEY=VALUE]…
#   IMAGE_PREFIX   registry path with a trailing slash, e.g. "$CI_REGISTRY_IMAGE/" (default: none)
#   IMAGE_TAG      default: the commit's short hash (+ "-dirty" for a modified work tree)
#   LOCAL_BASE_IMAGES=1   first make the base images locally (docker/base-images.sh): for an
#                  engine that cannot pull from a registry
#   --push         push the three images (log in first, e.g. to $CI_REGISTRY)
#   --label        extra image labels (a different label gives a different image id)
set -euo pipefail
cd "$(dirname "$0")/.."

PUSH=0
LABELS=()
while [ $# -gt 0 ]; do
    case $1 in
        --push) PUSH=1 ;;
        --label) [ $# -ge 2 ] || { echo "error: --label needs KEY=VALUE" >&2; exit 2; }
                 LABELS+=(--label "$2"); shift ;;
        *) echo "error: unknown argument $1 (usage: $0 [--push] [--label KEY=VALUE])" >&2; exit 2 ;;
    esac
    shift
done
command -v docker >/dev/null || { echo "error: docker not found" >&2; exit 1; }
REF=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$REF" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    REF=$REF-dirty
fi
TAG=${IMAGE_TAG:-$REF}
PREFIX=${IMAGE_PREFIX:-}
OUT=${IMAGES_ENV:-images.env}

if [ "${LOCAL_BASE_IMAGES:-0}" = 1 ]; then
    bash docker/base-images.sh
fi

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

# One image: build (log in $LOGS/<n>.log, printed when it fails), then push with --push.
build() {
    local name=$1 dockerfile=$2 log=$LOGS/$3.log start=$SECONDS
    # The classic builder (no buildx on the test machine's engine) and BuildKit both build these.
    if ! docker build --file "$dockerfile" --tag "$name" --build-arg "VCS_REF=$REF" "${LABELS[@]}" . >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "error: docker build of $name ($dockerfile) failed (last lines above)" >&2
        return 1
    fi
    echo "== built $name in $((SECONDS - start)) s"
    if [ "$PUSH" = 1 ]; then
        docker push "$name" >"$log.push" 2>&1 || { cat "$log.push" >&2; return 1; }
    fi
}

COVIDCT_IMAGE=${PREFIX}covidct:$TAG
MLFLOW_IMAGE=${PREFIX}covidct-mlflow:$TAG
MONITOR_IMAGE=${PREFIX}covidct-monitor:$TAG
GATEWAY_IMAGE=${PREFIX}covidct-gateway:$TAG
# The three builds run at once: cargo's compile is CPU-bound, the two pip installs mostly wait
# on the network and the disk.
build "$COVIDCT_IMAGE" docker/covidct.Dockerfile covidct & covidct_pid=$!
build "$MLFLOW_IMAGE" docker/mlflow.Dockerfile mlflow & mlflow_pid=$!
build "$GATEWAY_IMAGE" docker/gateway.Dockerfile gateway & gateway_pid=$!
pids=("$covidct_pid" "$mlflow_pid" "$gateway_pid")
MONITOR_REPLICAS=1
if [ -f monitoring/pyproject.toml ]; then
    build "$MONITOR_IMAGE" docker/monitor.Dockerfile monitor & pids+=($!)
else
    echo "== no monitoring/ in this checkout: no monitoring image, the stack runs no monitor"
    MONITOR_IMAGE=
    MONITOR_REPLICAS=0
fi
failed=0
for pid in "${pids[@]}"; do
    wait "$pid" || failed=1
done
[ "$failed" = 0 ] || exit 1
cat > "$OUT" <<ENV
COVIDCT_IMAGE=$COVIDCT_IMAGE
COVIDCT_MLFLOW_IMAGE=$MLFLOW_IMAGE
COVIDCT_MONITOR_IMAGE=$MONITOR_IMAGE
COVIDCT_GATEWAY_IMAGE=$GATEWAY_IMAGE
MONITOR_REPLICAS=$MONITOR_REPLICAS
ENV
echo "== images in $OUT:"
cat "$OUT"
