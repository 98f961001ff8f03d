#!/usr/bin/env bash
# Build the images, run the gateway with three session replicas behind the API balancer,
# drive a device and a constellation through the gateway's published port, start
# sessions from the host through the balancer's published address (reaching several
# replicas), kill a replica mid-task, check the failover and the restarted replica, then
# tear everything down (containers, network, the records volume).
set -euo pipefail
cd "$(dirname "$0")/.."
project=${COMPOSE_PROJECT:-aipcompose}
export AIP_GATEWAY_PUBLISHED_PORT=${AIP_GATEWAY_PUBLISHED_PORT:-18000}
export AIP_API_PUBLISHED_PORT=${AIP_API_PUBLISHED_PORT:-18050}
export AIP_IMAGE_TAG=${AIP_IMAGE_TAG:-$project}
# The check holds one session per replica on its one device, then kills a replica
# mid-task: the device must take them all at once.
export AIP_MAX_RUNNING_PER_DEVICE=${AIP_MAX_RUNNING_PER_DEVICE:-0}
engine=$(command -v podman || command -v docker)
python=${PYTHON:-.venv/bin/python}

# Fresh credentials for this run, in an env file only this user can read.
env_file=$(mktemp "${TMPDIR:-/tmp}/aip-compose-env.XXXXXX")
chmod 600 "$env_file"
token() { "$python" -c 'import secrets; print(secrets.token_urlsafe(32))'; }
{ echo "AIP_LINK_TOKEN=$(token)"; echo "AIP_API_TOKEN=$(token)"; } >"$env_file"
set -a
# shellcheck disable=SC1090
. "$env_file"
set +a

compose() { docker-compose -p "$project" "$@"; }
teardown() {
  # `down` only knows the replica count written in the compose file, not --scale:
  # remove every container of the project first, then the rest with its volume.
  "$engine" ps -aq --filter "label=com.docker.compose.project=$project" \
    | xargs -r "$engine" rm -f >/dev/null 2>&1 || true
  compose down -v --remove-orphans -t 2 >/dev/null 2>&1 || true
  "$engine" volume rm -f "${project}_session-records" >/dev/null 2>&1 || true
}
trap 'teardown; rm -f "$env_file"' EXIT

teardown
compose build
compose up -d --scale session=3
"$python" scripts/compose_check.py \
  --url "ws://127.0.0.1:${AIP_GATEWAY_PUBLISHED_PORT}/ws" \
  --api "127.0.0.1:${AIP_API_PUBLISHED_PORT}" --api-token-file "$env_file" \
  --kill "$engine kill ${project}_session_2" \
  --restart "$engine start ${project}_session_2"
echo "compose-test passed"
