#!/usr/bin/env bash
# `make run`: a local 3-node tern cluster; the leader is killed with SIGKILL, a new one is
# elected, the killed node comes back and catches up, then everything stops.
set -euo pipefail
TERN="${TERN:-tern}"
DIR="${TERN_DEMO_DIR:-$PWD/.tern-demo}"
PORT="${TERN_DEMO_PORT:-7401}"
t() { "$TERN" --cluster "$DIR" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$TERN" down --cluster "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
trap '"$TERN" down --cluster "$DIR" >/dev/null 2>&1 || true' EXIT

step "start a local 3-node cluster"
"$TERN" up --detach --dir "$DIR" --nodes 3 --base-port "$PORT"

step "write to the Raft-replicated catalog"
t catalog put demo greeting "hello from tern"
t catalog get demo greeting

leader=$(t wait leader | awk '{print $2}')
step "kill the leader, node $leader, with SIGKILL"
t node stop "$leader" --kill
step "a new leader is elected (time from the kill)"
t wait leader --not "$leader" --timeout-secs 30
t status

step "the catalog is intact and still takes writes"
t catalog get demo greeting
t catalog put demo after-failover "still writable"

step "restart node $leader: it rejoins from its data dir and catches up"
t node start "$leader"
t wait caught-up "$leader"
t status

step "stop the cluster"
"$TERN" down --cluster "$DIR"
trap - EXIT
