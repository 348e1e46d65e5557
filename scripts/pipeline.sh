#!/usr/bin/env bash
# The model-lifecycle steps of the delivery pipeline, one subcommand each; the GitLab jobs
# (.gitlab-ci.yml) and scripts/swarm-test.sh call these, so no step lives only in CI's YAML.
#   train      the default model on DATASET_DIR (scripts/main.sh): RUN_DIR/model.ctpkg, split.csv
#   evaluate   covidct evaluate of RUN_DIR/model.ctpkg on the test split -> EVAL_OUT
#   register   covidct models register RUN_DIR/model.ctpkg (new version, alias @challenger)
#   gate       covidct models promote: @challenger becomes @champion unless worse than it on
#              GATE_METRIC by more than GATE_MARGIN; exit 3 (refused) fails the job
#   monitor    the Evidently report once on the deployed stack's prediction log (a container of
#              COVIDCT_MONITOR_IMAGE on the swarm manager, DOCKER_HOST) -> MONITOR_OUT; exit 1
#              when a monitoring test fails
# Variables: COVIDCT (the binary, default target/release/covidct), DATASET_DIR, RUNS (runs),
# RUN_DIR (RUNS/train), SPLIT (RUNS/split.csv, used when it exists), EVAL_OUT (RUNS/evaluation),
# GATE_OUT (RUNS/promotion), GATE_METRIC (roc_auc), GATE_MARGIN (0), MLFLOW_TRACKING_URI;
# monitor: STACK (covidct), COVIDCT_MONITOR_IMAGE, MONITOR_WINDOW (24h), MONITOR_OUT
# (RUNS/monitoring).
set -euo pipefail
cd "$(dirname "$0")/.." 2>/dev/null || true

COVIDCT=${COVIDCT:-target/release/covidct}
RUNS=${RUNS:-runs}
RUN_DIR=${RUN_DIR:-$RUNS/train}
SPLIT=${SPLIT:-$RUNS/split.csv}
die() { echo "error: $*" >&2; exit 1; }
need_dataset() {
    [ -n "${DATASET_DIR:-}" ] || die "set DATASET_DIR to the dataset folder (ROOT/<class>/<image>)"
    [ -d "$DATASET_DIR" ] || die "DATASET_DIR=$DATASET_DIR is not a folder"
}
# --manifest SPLIT --split test when the split of the training run is there.
split_args() {
    if [ -f "$SPLIT" ]; then
        echo "--manifest $SPLIT --split test"
    fi
}

case ${1:-} in
    train)
        need_dataset
        COVIDCT_RUN_DIR=$RUNS bash scripts/main.sh "$DATASET_DIR"
        ;;
    evaluate)
        need_dataset
        # shellcheck disable=SC2046
        "$COVIDCT" evaluate --model "$RUN_DIR/model.ctpkg" --data-dir "$DATASET_DIR" $(split_args) \
            --out "${EVAL_OUT:-$RUNS/evaluation}"
        ;;
    register)
        [ -f "$RUN_DIR/model.ctpkg" ] || die "$RUN_DIR/model.ctpkg missing: run the train step first"
        "$COVIDCT" models register "$RUN_DIR/model.ctpkg" --alias challenger
        ;;
    gate)
        need_dataset
        status=0
        # shellcheck disable=SC2046
        "$COVIDCT" models promote --data-dir "$DATASET_DIR" $(split_args) --metric "${GATE_METRIC:-roc_auc}" \
            --margin "${GATE_MARGIN:-0}" --out "${GATE_OUT:-$RUNS/promotion}" || status=$?
        if [ "$status" = 3 ]; then
            die "quality gate: the challenger was refused (worse than the champion on ${GATE_METRIC:-roc_auc}); @champion unchanged"
        fi
        exit "$status"
        ;;
    monitor)
        STACK=${STACK:-covidct}
        : "${COVIDCT_MONITOR_IMAGE:?set COVIDCT_MONITOR_IMAGE}"
        out=${MONITOR_OUT:-$RUNS/monitoring}
        mkdir -p "$out"
        # Same volumes as the stack's monitor service, one report into /reports/<UTC time>/.
        cid=$(docker create --network "${STACK}_internal" -e MLFLOW_TRACKING_URI=http://mlflow:5000 \
            -v "${STACK}_predictions:/var/lib/covidct" -v "${STACK}_monitor-reference:/reference:ro" \
            -v "${STACK}_monitor-reports:/reports" "$COVIDCT_MONITOR_IMAGE" report --history \
            --reference /reference/reference.csv --current /var/lib/covidct/predictions.sqlite \
            --window "${MONITOR_WINDOW:-24h}" --out /reports)
        status=0
        docker start --attach "$cid" || status=$?
        docker cp "$cid:/reports/latest/." "$out" || echo "warning: no report to copy" >&2
        docker rm "$cid" >/dev/null
        echo "monitoring report: $out/index.html (exit $status: 0 pass, 1 a test failed, 2 bad input)"
        exit "$status"
        ;;
    *)
        die "usage: $0 train | evaluate | register | gate | monitor"
        ;;
esac
