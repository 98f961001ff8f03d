#!/usr/bin/env bash
# Usage: run-services.sh BIN SESSION_HOST SESSION_PORT GATEWAY_HOST GATEWAY_PORT
#
# `make run`: one session-service replica and the gateway in the foreground. Ctrl-C (SIGINT
# to the process group) or SIGTERM stops both (each drains; a second signal cuts the
# drain short) and exits 0.
# When either service stops by itself, a failure to bind its port included, the other is
# stopped too and this exits non-zero (the first one's status, or 1).
set -u
if [ $# -ne 5 ]; then
  echo "usage: $0 BIN SESSION_HOST SESSION_PORT GATEWAY_HOST GATEWAY_PORT" >&2
  exit 2
fi
bin=$1 session_host=$2 session_port=$3 gateway_host=$4 gateway_port=$5

"$bin/aip-session" --host "$session_host" --port "$session_port" &
session_pid=$!
"$bin/aip-gateway" --host "$gateway_host" --port "$gateway_port" \
  --session-service "$session_host:$session_port" &
gateway_pid=$!

stopping=0
stop_both() {
  stopping=1
  kill -TERM "$gateway_pid" "$session_pid" 2>/dev/null
}
# Ctrl-C reaches the whole foreground process group, the services included (each handles
# SIGINT itself): passing it on as well would count as their second signal and cut the
# drain short. SIGTERM reaches only make and this script, so it is passed on.
trap 'stopping=1' INT
trap stop_both TERM

first=""
wait -n -p first "$session_pid" "$gateway_pid"
status=$?
if [ "$stopping" = 0 ]; then
  if [ "$first" = "$session_pid" ]; then
    name=aip-session other=aip-gateway other_pid=$gateway_pid
  else
    name=aip-gateway other=aip-session other_pid=$session_pid
  fi
  echo "make run: $name exited with status $status; stopping $other" >&2
  kill -TERM "$other_pid" 2>/dev/null
fi
# Wait for both, through further signals (which only reach the trap).
for pid in "$gateway_pid" "$session_pid"; do
  while kill -0 "$pid" 2>/dev/null; do
    wait "$pid"
  done
done
if [ "$stopping" = 1 ]; then
  exit 0
fi
[ "$status" -ne 0 ] || status=1
exit "$status"
