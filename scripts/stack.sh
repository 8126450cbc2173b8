#!/usr/bin/env bash
# `make up` / `make down`: the hands-free stack (`dg dev` = webserver + daemon) on 127.0.0.1.
#
# The instance lives in $DAGSTER_HOME (default .dagster_home). With DAGSTER_PG_URL set it is the
# production instance of ./dagster.yaml (PostgreSQL storage); otherwise a local SQLite instance
# with the same run limits. Sensors and schedules start RUNNING (their default status), so a file
# dropped into the inbox flows through every stage without a click.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bin="$root/${VENV:-.venv}/bin"
home=$(mkdir -p "${DAGSTER_HOME:-.dagster_home}" && cd "${DAGSTER_HOME:-.dagster_home}" && pwd)
pidfile="$home/dagster-dev.pid"
port=${PORT:-3000}
# The latency benchmark points this at its baseline's instance file; `make up` leaves it.
workspace=$root/workspace.yaml
instance_file=${STACK_INSTANCE_FILE:-$root/dagster.yaml}

write_instance() {
  if [ -n "${DAGSTER_PG_URL:-}" ]; then
    # dagster-postgres needs psycopg2; a bare postgresql:// would select psycopg 3.
    DAGSTER_PG_URL="${DAGSTER_PG_URL/#postgresql:\/\//postgresql+psycopg2://}"
    DAGSTER_PG_URL="${DAGSTER_PG_URL/#postgres:\/\//postgresql+psycopg2://}"
    export DAGSTER_PG_URL
  fi
  # dagster.yaml as it is with DAGSTER_PG_URL, else without its storage block (SQLite in $home);
  # the same code writes the instance of `ordersys demo`.
  "$bin/python" -m ordersys_pipelines.cli.instance_home "$home" "$instance_file"
}

up() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "already running (pid $(cat "$pidfile")): http://127.0.0.1:$port"; return 0
  fi
  write_instance
  mkdir -p "$root/.ordersys"
  export DAGSTER_HOME="$home"
  export ORDERSYS_DATABASE_URL="${ORDERSYS_DATABASE_URL:-sqlite:///$root/.ordersys/ordersys.db}"
  export ORDERSYS_INBOX="${ORDERSYS_INBOX:-$root/data/inbox}"
  mkdir -p "$ORDERSYS_INBOX"
  if [ -z "${ORDERSYS_REDIS_URL:-}" ]; then
    # Unconfigured: the embedded server (never a Redis nobody named; README, "Redis").
    ORDERSYS_REDIS_URL=$("$bin/python" -c 'from pathlib import Path; from ordersys_pipelines.resources.redis import resolve_redis_url as r; print(r(None, Path(".ordersys/redis")))')
    export ORDERSYS_REDIS_URL
  fi
  "$bin/ordersys" db upgrade
  # Every run's own process imports the code location; with bytecode written beforehand it reads
  # it instead of compiling every module again (nothing else writes it where
  # PYTHONDONTWRITEBYTECODE is set). A module changed later is compiled again as usual.
  "$bin/python" -m compileall -q "$root/ordersys_pipelines" > /dev/null || true
  # Dagster's event-write switches for webserver, daemon and run workers (cli/instance_home.py).
  eval "$("$bin/python" -m ordersys_pipelines.cli.instance_home --event-env)"
  # Stage pools take their limits from the stage tag limits (dagster.yaml, "Run limits").
  "$bin/python" -m ordersys_pipelines.cli.stage_pools
  # `dg dev` on the workspace file, started from $home: the instance's own dagster.yaml is the
  # only one in sight (in the project root, the production file would earn a warning that it is
  # not the instance's).
  export VIRTUAL_ENV="$root/${VENV:-.venv}"
  # Its own session, so `down` can stop webserver, daemon and code servers as one group.
  # The redirections apply to the whole background subshell: no process left behind may hold
  # this script's stdout/stderr, or a caller reading them (CI, a test) waits for ever.
  (cd "$home" && exec setsid bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$pidfile" \
      "$bin/dg" dev -w "$workspace" --host 127.0.0.1 --port "$port") \
      > "$home/dagster-dev.log" 2>&1 < /dev/null &
  sleep 0.5
  for _ in $(seq 1 120); do
    if curl -sf "http://127.0.0.1:$port/server_info" >/dev/null 2>&1; then
      echo "ordersys is up: http://127.0.0.1:$port (inbox $ORDERSYS_INBOX, log $home/dagster-dev.log)"
      return 0
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -20 "$home/dagster-dev.log"; return 1; }
    sleep 1
  done
  echo "the webserver did not answer within 120 s; see $home/dagster-dev.log"; return 1
}

down() {
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    pid=$(cat "$pidfile")
    # SIGINT is what `dg dev` handles as a clean shutdown of its children.
    kill -INT -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped"
  else
    echo "not running"
  fi
  rm -f "$pidfile"
}

"${1:-up}"
