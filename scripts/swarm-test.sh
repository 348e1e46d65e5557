#!/usr/bin/env bash
# A real deployment on this machine's Docker engine, end to end:
#   1. base images made locally (docker/base-images.sh: no registry here), then the images
#      (scripts/build-images.sh, tag v1)
#   2. a single-node swarm (docker swarm init, unless this engine is in one already)
#   3. scripts/deploy.sh up: secrets, docker stack deploy of deploy/stack.yml (API port
#      $COVIDCT_API_PORT), MLflow healthy
#   4. the registry seeded from a container on the stack's overlay network with the covidct
#      image: a tiny model trained on generated images (tracked in the stack's MLflow),
#      registered, promoted to @champion by the quality gate (scripts/pipeline.sh gate); the API
#      replicas, which restart until a champion exists, become ready
#   5. the deployed API suite (tests/deployed, pytest) against the published port
#   6. the monitoring job once (when the monitoring image and `covidct monitor` exist)
#   7. a rolling update to a second image (v2) while a bounded load runs: zero failed requests
#   8. docker service rollback: v1 runs again, still ready
#   9. teardown (always, also on failure): stack removed, volumes and secrets deleted, the swarm
#      left if this script created it
# Prints the duration of each phase. Usage: scripts/swarm-test.sh (root, Docker engine; the
# .venv of scripts/setup.sh for pytest and Pillow). SWARM_TEST_KEEP=1 leaves the stack running
# after a pass (for a look around; remove it with STACK=covidcttest scripts/deploy.sh down).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

export STACK=${STACK:-covidcttest}
export COVIDCT_API_PORT=${COVIDCT_API_PORT:-18080}
export RESOLVE_IMAGE=never  # local images: no registry to pin digests from
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
URL=http://127.0.0.1:$COVIDCT_API_PORT
TIMES=()
die() { echo "error: $*" >&2; exit 1; }
log() { echo "== swarm-test: $*"; }
phase_start() { PHASE=$1; PHASE_T0=$SECONDS; log "$PHASE"; }
phase_end() { TIMES+=("$(printf '%-44s %4d s' "$PHASE" $((SECONDS - PHASE_T0)))"); }

command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer"
"$PYTHON" -c 'import PIL, pytest' 2>/dev/null || die "$PYTHON lacks Pillow/pytest: run scripts/setup.sh"

# The stack's volumes (a container that is still being removed holds them for a moment).
remove_volumes() {
    local tries=0
    while [ -n "$(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]; do
        docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker volume rm >/dev/null 2>&1 || true
        tries=$((tries + 1))
        [ "$tries" -lt 30 ] || { echo "warning: volumes of $STACK remain" >&2; return 0; }
        sleep 1
    done
}
if docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx "$STACK"; then
    die "a stack $STACK is deployed already: remove it first (STACK=$STACK scripts/deploy.sh down)"
fi
# A fresh registry: no volume of an earlier run.
remove_volumes

WORK=$(mktemp -d /var/tmp/covidct-swarm-test.XXXXXX)
chmod 755 "$WORK"
SWARM_CREATED=0
T0=$SECONDS
teardown() {
    local status=$?
    set +e
    if [ "$status" != 0 ]; then
        log "FAILED (exit $status); service states and logs:"
        docker stack ps --no-trunc "$STACK" 2>/dev/null | head -30
        for service in api mlflow gateway monitor; do
            docker service logs --tail 20 "${STACK}_$service" 2>/dev/null
        done
    fi
    if [ "$status" = 0 ] && [ "${SWARM_TEST_KEEP:-0}" = 1 ]; then
        log "SWARM_TEST_KEEP=1: stack $STACK left running on $URL (keys in $WORK)"
        exit 0
    fi
    phase_start "teardown"
    WAIT_TIMEOUT=180 bash scripts/deploy.sh down
    remove_volumes
    docker secret ls -q --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null | xargs -r docker secret rm >/dev/null
    if [ "$SWARM_CREATED" = 1 ]; then
        docker swarm leave --force >/dev/null && log "left the swarm"
    fi
    rm -rf "$WORK"
    phase_end
    log "durations (2-core machine):"
    printf '  %s\n' "${TIMES[@]}"
    log "total $((SECONDS - T0)) s, exit $status"
    exit "$status"
}
trap teardown EXIT

phase_start "images (base images + build v1)"
export IMAGES_ENV=$WORK/images.env
LOCAL_BASE_IMAGES=1 IMAGE_TAG=v1 bash scripts/build-images.sh
# shellcheck disable=SC1090
. "$IMAGES_ENV"
export COVIDCT_IMAGE COVIDCT_MLFLOW_IMAGE COVIDCT_MONITOR_IMAGE COVIDCT_GATEWAY_IMAGE MONITOR_REPLICAS
phase_end

phase_start "swarm init"
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null
    SWARM_CREATED=1
fi
phase_end

phase_start "deploy (stack up, MLflow healthy)"
umask 077
openssl rand -hex 24 > "$WORK/api-keys.txt"
openssl rand -hex 24 > "$WORK/admin-keys.txt"
umask 022
COVIDCT_API_KEY=$(cat "$WORK/api-keys.txt")
COVIDCT_ADMIN_KEY=$(cat "$WORK/admin-keys.txt")
export COVIDCT_API_KEY COVIDCT_ADMIN_KEY
API_KEYS_FILE=$WORK/api-keys.txt ADMIN_KEYS_FILE=$WORK/admin-keys.txt WAIT_SERVICES=mlflow \
    bash scripts/deploy.sh up
phase_end

# One-off jobs of the pipeline, in the covidct image on the stack's network, as operators run
# them (docs/OPERATIONS.md): the working folder is a bind mount of $WORK/job.
job() {
    docker run --rm --network "${STACK}_internal" \
        -e MLFLOW_TRACKING_URI=http://mlflow:5000 -e COVIDCT_LOG_FORMAT=human \
        -e HOME=/job -e COVIDCT_MODEL_CACHE=/job/.covidct/models -e COVIDCT_SPOOL_DIR=/job/.covidct/spool \
        -v "$WORK/job:/job" -v "$ROOT/scripts:/scripts:ro" -w /job "$@"
}

phase_start "seed the registry (train, register, gate)"
mkdir -p "$WORK/job"
chmod 777 "$WORK/job"  # the image runs as uid 10001
# In tests/, where `python -` and `python -c` find its conftest.py.
(cd tests && "$PYTHON" - "$WORK/job/data" <<'PY'
import sys
from pathlib import Path
from conftest import shapes_dataset
shapes_dataset(Path(sys.argv[1]))
PY
)
# The tiny model of tests/conftest.py (TRAIN_FLAGS): a ResNet-18 at 32 px, seconds to train.
TRAIN_FLAGS=$(cd tests && "$PYTHON" -c 'from conftest import TRAIN_FLAGS; print(" ".join(TRAIN_FLAGS))')
# shellcheck disable=SC2086
job "$COVIDCT_IMAGE" train --data-dir /job/data --out /job/run $TRAIN_FLAGS
job --entrypoint bash -e COVIDCT=covidct -e RUN_DIR=/job/run -e DATASET_DIR=/job/data -e GATE_OUT=/job/promotion \
    "$COVIDCT_IMAGE" /scripts/pipeline.sh register
job --entrypoint bash -e COVIDCT=covidct -e RUN_DIR=/job/run -e DATASET_DIR=/job/data -e GATE_OUT=/job/promotion \
    "$COVIDCT_IMAGE" /scripts/pipeline.sh gate
phase_end

phase_start "API replicas ready"
WAIT_TIMEOUT=300 bash scripts/deploy.sh wait api gateway
phase_end

phase_start "deployed API suite (pytest)"
COVIDCT_API_URL=$URL "$PYTHON" -m pytest tests/deployed -q -p no:cacheprovider
phase_end

if [ -n "$COVIDCT_MONITOR_IMAGE" ] \
    && job "$COVIDCT_IMAGE" monitor export-reference --help >/dev/null 2>&1; then
    phase_start "monitoring job once (report on the live log)"
    job "$COVIDCT_IMAGE" monitor export-reference --model models:/covidct@champion --data-dir /job/data \
        --out /job/reference.csv
    MONITOR_REFERENCE=$WORK/job/reference.csv bash scripts/deploy.sh reference
    set +e
    MONITOR_OUT=$WORK/monitoring bash scripts/pipeline.sh monitor
    status=$?
    set -e
    # 0: every test passed, 1: a test failed (drift is expected: generated images); 2, 3: broken.
    [ "$status" -le 1 ] || die "the monitoring job failed with exit $status"
    [ -s "$WORK/monitoring/index.html" ] || die "the monitoring job wrote no index.html"
    phase_end
else
    log "monitoring check skipped: no monitoring image or no \`covidct monitor\` in this checkout"
fi

phase_start "rolling update to v2 under load"
docker build --quiet --label covidct.test.rollout=v2 --tag "${COVIDCT_IMAGE%:*}:v2" - >/dev/null <<DOCKERFILE
FROM $COVIDCT_IMAGE
DOCKERFILE
V1_ID=$(docker image inspect --format '{{.Id}}' "$COVIDCT_IMAGE")
V2_ID=$(docker image inspect --format '{{.Id}}' "${COVIDCT_IMAGE%:*}:v2")
[ "$V1_ID" != "$V2_ID" ] || die "v2 is the same image as v1"
rm -f "$WORK/stop-load"
"$PYTHON" tests/deployed/load.py --url "$URL" --key "$COVIDCT_API_KEY" --threads 4 --requests 20000 \
    --duration 400 --stop-file "$WORK/stop-load" --json "$WORK/load-update.json" > "$WORK/load-update.txt" 2>&1 &
LOAD_PID=$!
sleep 3
update_t0=$SECONDS
docker service update --quiet --detach=false --no-resolve-image --image "${COVIDCT_IMAGE%:*}:v2" "${STACK}_api" >/dev/null
log "service update converged in $((SECONDS - update_t0)) s"
sleep 3
touch "$WORK/stop-load"
load_status=0
wait "$LOAD_PID" || load_status=$?
cat "$WORK/load-update.txt"
[ "$load_status" = 0 ] || die "requests failed during the rolling update (above)"
running=$(docker service ps --filter desired-state=running --format '{{.Image}}' "${STACK}_api" | sort -u)
[ "$running" = "${COVIDCT_IMAGE%:*}:v2" ] || die "after the update the API runs: $running"
phase_end

phase_start "rollback to v1 under load"
rm -f "$WORK/stop-load"
"$PYTHON" tests/deployed/load.py --url "$URL" --key "$COVIDCT_API_KEY" --threads 4 --requests 20000 \
    --duration 400 --stop-file "$WORK/stop-load" > "$WORK/load-rollback.txt" 2>&1 &
LOAD_PID=$!
sleep 3
docker service rollback --quiet --detach=false "${STACK}_api" >/dev/null
sleep 3
touch "$WORK/stop-load"
load_status=0
wait "$LOAD_PID" || load_status=$?
cat "$WORK/load-rollback.txt"
[ "$load_status" = 0 ] || die "requests failed during the rollback (above)"
running=$(docker service ps --filter desired-state=running --format '{{.Image}}' "${STACK}_api" | sort -u)
[ "$running" = "$COVIDCT_IMAGE" ] || die "after the rollback the API runs: $running"
COVIDCT_API_URL=$URL "$PYTHON" -m pytest tests/deployed -q -p no:cacheprovider -k "health or model_card"
phase_end
log "passed"
