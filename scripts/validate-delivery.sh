#!/usr/bin/env bash
# Offline checks of the delivery files (no engine state is changed, nothing is pulled):
#   - shellcheck of every shell script
#   - .gitlab-ci.yml against GitLab's CI schema (check-jsonschema's vendored copy)
#   - deploy/stack.yml as Docker resolves it (`docker stack config`, or `docker-compose config`
#     where the Docker CLI is older than 23 and has no `stack config`) and as written, against
#     the Compose specification's schema
#   - docker/covidct.Dockerfile lists every workspace crate's manifest (its dependency layer)
# Usage: scripts/validate-delivery.sh (after `scripts/setup.sh lint`: .venv-lint with check-jsonschema)
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK_JSONSCHEMA=${CHECK_JSONSCHEMA:-.venv-lint/bin/check-jsonschema}
die() { echo "error: $*" >&2; exit 1; }

[ -x "$CHECK_JSONSCHEMA" ] || die "$CHECK_JSONSCHEMA missing: run \`bash scripts/setup.sh lint\`"
if ! command -v shellcheck >/dev/null; then
    echo "installing shellcheck with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi

echo "== shellcheck"
shellcheck .ci/run scripts/*.sh docker/*.sh docker/covidct-healthcheck

echo "== .gitlab-ci.yml (GitLab CI schema)"
"$CHECK_JSONSCHEMA" --builtin-schema vendor.gitlab-ci --data-transform gitlab-ci .gitlab-ci.yml

echo "== deploy/stack.yml (Compose specification)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$CHECK_JSONSCHEMA" --builtin-schema vendor.compose-spec deploy/stack.yml
# Resolved as `docker stack deploy` would, with example values for the variables.
export COVIDCT_IMAGE=registry.example/covidct:0 COVIDCT_MLFLOW_IMAGE=registry.example/covidct-mlflow:0 \
    COVIDCT_MONITOR_IMAGE=registry.example/covidct-monitor:0 COVIDCT_API_KEYS_SECRET=covidct_api_keys_0 \
    COVIDCT_ADMIN_KEYS_SECRET=covidct_admin_keys_0
if docker stack config --help >/dev/null 2>&1; then
    docker stack config --compose-file deploy/stack.yml > "$tmp/stack.yml"
elif command -v docker-compose >/dev/null; then
    echo "(docker stack config unavailable in this Docker CLI: docker-compose config instead)"
    docker-compose --file deploy/stack.yml config > "$tmp/stack.yml"
else
    die "neither \`docker stack config\` (Docker CLI 23+) nor docker-compose is available"
fi
"$CHECK_JSONSCHEMA" --builtin-schema vendor.compose-spec "$tmp/stack.yml"
grep -q 'image: registry.example/covidct:0' "$tmp/stack.yml" || die "the resolved stack does not use COVIDCT_IMAGE"

echo "== docker/covidct.Dockerfile lists every crate manifest"
for manifest in crates/*/Cargo.toml; do
    grep -q "^COPY $manifest ${manifest%Cargo.toml}\$" docker/covidct.Dockerfile \
        || die "docker/covidct.Dockerfile lacks \`COPY $manifest ${manifest%Cargo.toml}\` (dependency layer)"
done
echo "delivery files valid"
