#!/usr/bin/env bash
# Build the two images, run the gateway with three session replicas, drive a device and
# a constellation through the gateway's published port, kill a replica mid-task, check
# the failover and the restarted replica, then tear everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
project=${COMPOSE_PROJECT:-aipcompose}
export AIP_GATEWAY_PUBLISHED_PORT=${AIP_GATEWAY_PUBLISHED_PORT:-18000}
engine=$(command -v podman || command -v docker)
python=${PYTHON:-.venv/bin/python}

compose() { docker-compose -p "$project" "$@"; }
cleanup() {
  # `down` only knows the replica count written in the compose file, not --scale.
  "$engine" ps -aq --filter "label=com.docker.compose.project=$project" \
    | xargs -r "$engine" rm -f >/dev/null 2>&1 || true
  compose down -t 2 >/dev/null 2>&1 || true
}
trap cleanup EXIT

cleanup
compose build
compose up -d --scale session=3
"$python" scripts/compose_check.py \
  --url "ws://127.0.0.1:${AIP_GATEWAY_PUBLISHED_PORT}/ws" \
  --kill "$engine kill ${project}_session_2" \
  --restart "$engine start ${project}_session_2"
echo "compose-test passed"
