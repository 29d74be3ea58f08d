#!/usr/bin/env bash
# `make run`: a local 4-node tern cluster; the leader is killed with SIGKILL, a new one is
# elected, the killed node comes back and catches up; then a dataset is stored in triplicate,
# a node holding it is killed, the data reads back identical, and repair brings every
# partition back to three replicas; SQL queries run as stages of tasks on the nodes holding
# the data (a join shuffled between them), a holder is killed in the middle of a query and the
# query still answers the same. Then the futures example (examples/futures.rs) runs a task per
# partition on the cluster and checks it against this machine, and, when TERN_PYTHON names the
# package's interpreter (make run does), the Python example stores a pandas DataFrame, groups
# it on the cluster and runs a Python function on each partition's holder, checked against
# pandas. Then everything stops.
set -euo pipefail
TERN="${TERN:-tern}"
DIR="${TERN_DEMO_DIR:-$PWD/.tern-demo}"
PORT="${TERN_DEMO_PORT:-7401}"
t() { "$TERN" --cluster "$DIR" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$TERN" down --cluster "$DIR" >/dev/null 2>&1 || true
rm -rf "$DIR"
trap '"$TERN" down --cluster "$DIR" >/dev/null 2>&1 || true' EXIT

step "start a local 4-node cluster (3 metadata voters, 1 learner; node 4 made slow for the demo)"
PYTHON_FLAG=()
if [ -n "${TERN_PYTHON:-}" ]; then PYTHON_FLAG=(--python "$TERN_PYTHON"); fi
"$TERN" up --detach --dir "$DIR" --nodes 4 --base-port "$PORT" --down-after 5 --out-after 10 --slow-node 4:300 "${PYTHON_FLAG[@]}"

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

t wait healthy

step "store a dataset: 200,000 rows of parking tickets, cut into partitions, each on 3 nodes"
awk 'BEGIN {
  srand(42); print "ticket_id,issued,plate_state,violation,fine,street";
  split("NY NJ PA CT MA FL CA TX", states, " ");
  split("NO_PARKING EXPIRED_METER FIRE_HYDRANT DOUBLE_PARKING BUS_LANE", kinds, " ");
  for (i = 0; i < 200000; i++)
    printf "%d,2026-%02d-%02d,%s,%s,%d,%d %s St\n", 1000000 + i, 1 + i % 12, 1 + i % 28,
      states[1 + int(rand() * 8)], kinds[1 + int(rand() * 5)], 35 + 5 * int(rand() * 20),
      1 + int(rand() * 200), (i % 2 ? "West" : "East") " " (1 + i % 99)
}' > "$DIR/tickets.csv"
t put "$DIR/tickets.csv" --name tickets --partition-size 2MiB
t describe tickets
t get tickets --out "$DIR/before.csv" --quiet

Q1="SELECT violation, count(*) AS tickets, sum(fine) AS fines, round(avg(fine), 2) AS avg_fine FROM tickets GROUP BY violation ORDER BY fines DESC"
Q2="SELECT plate_state, count(DISTINCT street) AS streets, max(fine) AS top_fine FROM tickets WHERE violation = 'FIRE_HYDRANT' GROUP BY plate_state ORDER BY plate_state"
# A self-join: both sides hash-shuffled between the nodes, joined there, aggregated after a
# second shuffle.
Q3="SELECT a.plate_state, b.violation AS next_violation, count(*) AS pairs, sum(a.fine + b.fine) AS fines FROM tickets a JOIN tickets b ON b.ticket_id = a.ticket_id + 1 GROUP BY a.plate_state, b.violation ORDER BY a.plate_state, next_violation"
step "query it with SQL: each task runs on the least busy node holding its partition (slow node 4 gets few)"
t sql "$Q1" --analyze
t sql "$Q2" --out "$DIR/q2-before.csv"
step "a join runs as stages: scans hashed into buckets kept on the nodes, joined, aggregated"
t sql "$Q3" --explain | grep -E '^(stage|final)'
t sql "$Q3" --out "$DIR/q3-before.csv" --analyze

# A holder other than node 1, which coordinates this client's queries (killing the coordinator
# fails the query with an error saying so; `tern sql` does not run it again on its own).
holder=$(t describe tickets --json | grep -A3 '"holders"' | grep -oE '[0-9]+' | grep -vx 1 | head -1)
step "kill node $holder, which holds replicas of the dataset, while the join runs"
t sql "$Q3" --out "$DIR/q3-during.csv" --analyze &
query=$!
sleep 0.5
t node stop "$holder" --kill
wait "$query"
if cmp -s "$DIR/q3-before.csv" "$DIR/q3-during.csv"; then
  echo "the join answered the same with node $holder killed in the middle (see RETRIES and REDONE)"
else
  echo "MISMATCH: the join's answer differs"; exit 1
fi
t get tickets --out "$DIR/after.csv"
step "the queries still answer, the same, with node $holder dead (its tasks go to other holders)"
t sql "$Q1" --analyze
t sql "$Q2" --out "$DIR/q2-after.csv"
if cmp -s "$DIR/q2-before.csv" "$DIR/q2-after.csv"; then
  echo "query answer identical with node $holder down"
else
  echo "MISMATCH: the query answer differs"; exit 1
fi
if cmp -s "$DIR/before.csv" "$DIR/after.csv"; then
  echo "read back identical with node $holder down ($(wc -l < "$DIR/after.csv") lines)"
else
  echo "MISMATCH: the data read back differs"; exit 1
fi

step "node $holder is marked down after 5 s of silence (served by the other holders), out after 10 s: then its replicas are copied to the other nodes"
t wait replicated
t status
t describe tickets | sed -n '/PART/,$p'

FUTURES="${TERN_FUTURES:-$(dirname "$TERN")/examples/futures}"
if [ -x "$FUTURES" ]; then
  step "your own work as a task graph (Dask-style futures): a task per partition, where it is stored; then their sum where the outputs are kept"
  "$FUTURES" --cluster "$DIR" --dataset tickets
fi

if [ -n "${TERN_PYTHON:-}" ]; then
  step "Python (import tern): a pandas DataFrame stored in triplicate, grouped on the cluster, and your own function run on each partition's holder, checked against pandas"
  "$TERN_PYTHON" "$(dirname "$0")/../examples/python/people.py" --cluster "$DIR" --rows 50000
fi

step "stop the cluster"
"$TERN" down --cluster "$DIR"
trap - EXIT
