#!/usr/bin/env bash
# `make workers N=2` / `make workers-stop`: Celery workers that run the op jobs' steps when the
# code location runs with ORDERSYS_EXECUTOR=celery (docs/celery.md).
#
# Each worker is `celery -A ordersys_pipelines.celery_worker worker` on the queue
# ORDERSYS_CELERY_QUEUE (default ordersys) in its own session, with its pid file and log under
# ORDERSYS_WORKERS_DIR (default .ordersys/workers). Workers take the environment of this shell:
# the same ORDERSYS_* and DAGSTER_PG_URL as the code location, since a step writes to that
# database and its events to that instance storage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin="$root/${VENV:-.venv}/bin"
dir="${ORDERSYS_WORKERS_DIR:-$root/.ordersys/workers}"
queue="${ORDERSYS_CELERY_QUEUE:-ordersys}"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  local n=${1:-2}
  [ -n "${DAGSTER_PG_URL:-}" ] || {
    echo "DAGSTER_PG_URL is not set: workers write step events to the instance's PostgreSQL storage"; exit 1; }
  case "${ORDERSYS_DATABASE_URL:-}" in
    postgresql*) ;;
    *) echo "ORDERSYS_DATABASE_URL must be a PostgreSQL URL that every worker reaches"; exit 1 ;;
  esac
  # dagster-postgres needs psycopg2; a bare postgresql:// would select psycopg 3 (as stack.sh).
  DAGSTER_PG_URL="${DAGSTER_PG_URL/#postgresql:\/\//postgresql+psycopg2://}"
  export DAGSTER_PG_URL
  mkdir -p "$dir"
  local i name started=()
  for i in $(seq 1 "$n"); do
    name="$queue-$i"
    if alive "$dir/$name.pid"; then echo "$name already running (pid $(cat "$dir/$name.pid"))"; continue; fi
    rm -f "$dir/$name.pid"
    # Its own session, so `stop` (and a test) can end the worker with its pool processes.
    (exec setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$dir/$name.pid" \
        "$bin/celery" -A ordersys_pipelines.celery_worker worker -Q "$queue" -n "$name@%h" \
        --concurrency "${CONCURRENCY:-1}" --prefetch-multiplier 1 --loglevel INFO) \
        > "$dir/$name.log" 2>&1 < /dev/null &
    started+=("$name")
  done
  for name in "${started[@]}"; do
    for _ in $(seq 1 120); do
      grep -qs " ready\." "$dir/$name.log" && break
      # (The pid file appears a moment after the launch.)
      if [ -f "$dir/$name.pid" ] && ! alive "$dir/$name.pid"; then
        echo "$name exited:"; tail -20 "$dir/$name.log"; exit 1
      fi
      sleep 0.5
    done
    grep -qs " ready\." "$dir/$name.log" || { echo "$name did not start within 60 s; see $dir/$name.log"; exit 1; }
    echo "$name ready on queue $queue (pid $(cat "$dir/$name.pid"), log $dir/$name.log)"
  done
}

stop() {
  local pidfile pid
  for pidfile in "$dir"/*.pid; do
    [ -e "$pidfile" ] || { echo "no workers"; return 0; }
    if alive "$pidfile"; then
      pid=$(cat "$pidfile")
      # SIGTERM is Celery's warm shutdown: the running step finishes, then the worker exits.
      kill -TERM -- "-$pid" 2>/dev/null || true
      for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -KILL -- "-$pid" 2>/dev/null || true
      echo "stopped $(basename "$pidfile" .pid)"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-start}" in
  start) start "${2:-2}" ;;
  stop) stop ;;
  *) echo "usage: $0 start [N] | stop"; exit 2 ;;
esac
