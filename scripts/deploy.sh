#!/usr/bin/env bash
# Deploys (or updates) the covidct stack on a Docker Swarm: the engine of DOCKER_HOST (e.g.
# ssh://deploy@swarm-manager from CI) or the local one, which must be a swarm manager.
#   scripts/deploy.sh up      create the key secrets, deploy deploy/stack.yml, wait for services
#   scripts/deploy.sh wait SERVICE…   wait until these services run all their replicas, healthy
#   scripts/deploy.sh reference   copy MONITOR_REFERENCE into the monitor's reference volume
#   scripts/deploy.sh down    remove the stack and wait until its tasks and networks are gone
# Variables:
#   STACK (default covidct); COVIDCT_IMAGE, COVIDCT_MLFLOW_IMAGE, COVIDCT_MONITOR_IMAGE,
#   COVIDCT_GATEWAY_IMAGE (default:
#   read from ${IMAGES_ENV:-images.env}, written by scripts/build-images.sh); COVIDCT_API_PORT
#   API_KEYS_FILE, ADMIN_KEYS_FILE  key files (one key per line), required by `up`: each becomes
#       the secret <stack>_api_keys_<sha256 prefix>, so a changed file rolls the API over to it
#   MONITOR_REFERENCE  reference CSV of the monitor (`covidct monitor export-reference`), copied
#       into the monitor-reference volume when given
#   MONITOR_REPLICAS=0  no monitor (no monitoring image; also read from images.env)
#   WAIT_SERVICES  services `up` waits for (default: "mlflow api gateway"; the monitor restarts until its
#       reference is loaded, so it is not waited for); WAIT_TIMEOUT (s, 600)
#   RESOLVE_IMAGE  always (default: pin the registry digest) or never (local images, no registry)
set -euo pipefail
cd "$(dirname "$0")/.."

STACK=${STACK:-covidct}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-600}
die() { echo "error: $*" >&2; exit 1; }
log() { echo "== deploy: $*"; }

load_images() {
    local env_file=${IMAGES_ENV:-images.env} line name
    if [ -f "$env_file" ]; then
        while IFS= read -r line; do
            name=${line%%=*}
            case $name in
                # Variables already set (e.g. by CI) win over the file.
                COVIDCT_IMAGE|COVIDCT_MLFLOW_IMAGE|COVIDCT_MONITOR_IMAGE|COVIDCT_GATEWAY_IMAGE|MONITOR_REPLICAS)
                    [ -n "${!name:-}" ] || export "$name=${line#*=}" ;;
            esac
        done < "$env_file"
    fi
    : "${COVIDCT_IMAGE:?set COVIDCT_IMAGE or run scripts/build-images.sh (writes images.env)}"
    : "${COVIDCT_MLFLOW_IMAGE:?set COVIDCT_MLFLOW_IMAGE}"
    : "${COVIDCT_GATEWAY_IMAGE:?set COVIDCT_GATEWAY_IMAGE}"
    if [ -z "${COVIDCT_MONITOR_IMAGE:-}" ]; then
        [ "${MONITOR_REPLICAS:-1}" = 0 ] || die "set COVIDCT_MONITOR_IMAGE (or MONITOR_REPLICAS=0: no monitor)"
        unset COVIDCT_MONITOR_IMAGE
    else
        export COVIDCT_MONITOR_IMAGE
    fi
    export COVIDCT_IMAGE COVIDCT_MLFLOW_IMAGE COVIDCT_GATEWAY_IMAGE MONITOR_REPLICAS
}

# Creates secret NAME_<hash of FILE> unless it exists; prints its name.
secret_from_file() {
    local base=$1 file=$2 name
    [ -s "$file" ] || die "$file: missing or empty (one key per line)"
    name=${base}_$(sha256sum "$file" | cut -c1-12)
    if ! docker secret inspect "$name" >/dev/null 2>&1; then
        docker secret create --label "com.docker.stack.namespace=$STACK" "$name" "$file" >/dev/null
        log "created secret $name" >&2
    fi
    echo "$name"
}

# The services' volumes are node-local: the stack is placed on nodes labelled
# covidct.storage=true; label this manager when no node has the label yet.
ensure_storage_label() {
    local node labelled=0
    for node in $(docker node ls --format '{{.ID}}'); do
        if [ "$(docker node inspect --format '{{ index .Spec.Labels "covidct.storage" }}' "$node")" = true ]; then
            labelled=1
        fi
    done
    if [ "$labelled" = 0 ]; then
        node=$(docker info --format '{{.Swarm.NodeID}}')
        docker node update --label-add covidct.storage=true "$node" >/dev/null
        log "labelled node $node covidct.storage=true (its volumes hold the stack's data)"
    fi
}

# Copies the monitor's reference CSV into its volume, on the node the stack is placed on (the
# engine we talk to is a manager carrying the label when ensure_storage_label set it).
load_reference() {
    local volume=${STACK}_monitor-reference
    [ -s "$MONITOR_REFERENCE" ] || die "MONITOR_REFERENCE=$MONITOR_REFERENCE: missing or empty"
    docker volume create --label "com.docker.stack.namespace=$STACK" "$volume" >/dev/null
    docker run --rm -i --user 0 --network none --entrypoint sh -v "$volume:/reference" "$COVIDCT_MONITOR_IMAGE" \
        -c 'cat > /reference/reference.csv.tmp && chown 10001:10001 /reference/reference.csv.tmp && mv /reference/reference.csv.tmp /reference/reference.csv' \
        < "$MONITOR_REFERENCE"
    log "monitor reference: $MONITOR_REFERENCE -> volume $volume"
}

# Waits until each service runs all its replicas and no update is in progress; a rolled-back or
# paused update is a failure. Swarm reports a task with a healthcheck as Running only once it is
# healthy (until then: Starting), so Running means ready here.
wait_services() {
    local deadline=$((SECONDS + WAIT_TIMEOUT)) service full state replicas running
    for service in "$@"; do
        full=${STACK}_$service
        while :; do
            state=$(docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$full")
            case $state in
                rollback_completed|paused|rollback_paused)
                    docker service ps --no-trunc "$full" >&2 || true
                    die "$full: update ended in state $state" ;;
            esac
            replicas=$(docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "$full")
            running=$(docker service ps --filter desired-state=running --format '{{.CurrentState}}' "$full" \
                | grep -c '^Running' || true)
            if [ "$running" = "$replicas" ] \
                && { [ -z "$state" ] || [ "$state" = completed ] || [ "$state" = rollback_completed ]; }; then
                log "$full: $running/$replicas running and healthy"
                break
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                docker service ps --no-trunc "$full" >&2 || true
                docker service logs --tail 30 "$full" >&2 || true
                die "$full: $running/$replicas tasks running (healthy) after ${WAIT_TIMEOUT} s"
            fi
            sleep 3
        done
    done
}

up() {
    load_images
    [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ] \
        || die "this engine is not in a swarm (docker swarm init, or set DOCKER_HOST to a manager)"
    [ "$(docker info --format '{{.Swarm.ControlAvailable}}')" = true ] || die "this engine is not a swarm manager"
    : "${API_KEYS_FILE:?set API_KEYS_FILE to a file of API keys, one per line}"
    : "${ADMIN_KEYS_FILE:?set ADMIN_KEYS_FILE to a file of admin keys, one per line}"
    COVIDCT_API_KEYS_SECRET=$(secret_from_file "${STACK}_api_keys" "$API_KEYS_FILE")
    COVIDCT_ADMIN_KEYS_SECRET=$(secret_from_file "${STACK}_admin_keys" "$ADMIN_KEYS_FILE")
    export COVIDCT_API_KEYS_SECRET COVIDCT_ADMIN_KEYS_SECRET
    ensure_storage_label
    if [ -n "${MONITOR_REFERENCE:-}" ]; then
        load_reference
    fi
    log "docker stack deploy $STACK: $COVIDCT_IMAGE, $COVIDCT_MLFLOW_IMAGE, ${COVIDCT_MONITOR_IMAGE:-no monitor}"
    docker stack deploy --with-registry-auth --prune --resolve-image "${RESOLVE_IMAGE:-always}" \
        --compose-file deploy/stack.yml "$STACK"
    local services=${WAIT_SERVICES:-mlflow api gateway}
    if [ "${MONITOR_REPLICAS:-1}" = 0 ]; then
        services=${services//monitor/}
    fi
    # shellcheck disable=SC2086
    wait_services $services
}

down() {
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    docker stack rm "$STACK" >/dev/null 2>&1 || true
    while [ -n "$(docker ps -q --filter "label=com.docker.stack.namespace=$STACK")" ] \
        || [ -n "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "stack $STACK still has containers or networks after ${WAIT_TIMEOUT} s"
        sleep 2
    done
    log "stack $STACK removed (volumes and secrets are kept)"
}

case ${1:-} in
    up) up ;;
    reference) load_images; : "${MONITOR_REFERENCE:?set MONITOR_REFERENCE to the reference CSV}"; load_reference ;;
    wait) shift; [ $# -gt 0 ] || die "usage: $0 wait SERVICE…"; wait_services "$@" ;;
    down) down ;;
    *) die "usage: $0 up | wait SERVICE… | reference | down" ;;
esac
