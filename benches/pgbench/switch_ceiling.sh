#!/usr/bin/env bash
# The server's ceiling for one search-path switch per checkout, without the library: pgbench
# (PostgreSQL's C client) against a throwaway cluster holding 1,000 schemas `t<n>.items`
# (100 rows, as `load`'s tenants), 16 clients, 2 threads. Each script is one schema's
# statements in one pipeline (one `Sync`, as the library's switch in its statement's message).
# Shapes, each run with `-M extended` (every statement an unnamed Parse/Bind/Execute) and
# `-M prepared` (named, prepared once per connection: a session-mode router's cached
# statements), alternating, ROUNDS rounds of SECS seconds, median tps printed:
#   qualified  `SELECT v FROM t<n>.items WHERE id = :id`
#   switch     `SET search_path TO t<n>, public`; the unqualified `SELECT`
# Usage: benches/pgbench/switch_ceiling.sh [ROUNDS] [SECS] (run as root; needs PostgreSQL 15).
set -euo pipefail
ROUNDS=${1:-3}
SECS=${2:-4}
SCRIPTS=100
BIN=/usr/lib/postgresql/15/bin
DIR=$(mktemp -d /tmp/switch-ceiling.XXXXXX)
PORT=54987
chown postgres "$DIR"
as_pg() { runuser -u postgres -w PGOPTIONS -- "$@"; }
as_pg "$BIN/initdb" -D "$DIR/data" -A trust >/dev/null
as_pg "$BIN/pg_ctl" -D "$DIR/data" -o "-p $PORT -k $DIR -c max_connections=40 -c max_locks_per_transaction=256 -c shared_buffers=256MB -c fsync=off" -l "$DIR/log" start >/dev/null
trap 'as_pg "$BIN/pg_ctl" -D "$DIR/data" stop -m immediate >/dev/null; rm -rf "$DIR"' EXIT
psql() { as_pg "$BIN/psql" -h "$DIR" -p "$PORT" -q -v ON_ERROR_STOP=1 "$@" postgres; }
psql -c "DO \$\$ BEGIN FOR n IN 1..1000 LOOP
  EXECUTE format('CREATE SCHEMA t%s; CREATE TABLE t%s.items (id int PRIMARY KEY, v text NOT NULL);
                  INSERT INTO t%s.items SELECT g, md5(g::text) FROM generate_series(1, 100) g', n, n, n);
END LOOP; END \$\$" -c "ANALYZE"
for shape in qualified switch; do
  mkdir -p "$DIR/$shape"
  for i in $(seq 1 $SCRIPTS); do
    n=$(( (i * 7919) % 1000 + 1 ))
    f="$DIR/$shape/$i.sql"
    {
      echo '\set id random(1, 100)'
      echo '\startpipeline'
      if [ "$shape" = switch ]; then
        echo "SET search_path TO t$n, public;"
        echo 'SELECT v FROM items WHERE id = :id;'
      else
        echo "SELECT v FROM t$n.items WHERE id = :id;"
      fi
      echo '\endpipeline'
    } >"$f"
  done
done
chown -R postgres "$DIR"
declare -A results ratios
for round in $(seq 1 "$ROUNDS"); do
  for mode in extended prepared; do
    for shape in qualified switch; do
      args=()
      for f in "$DIR/$shape"/*.sql; do args+=(-f "$f"); done
      # `-M prepared` prepares a script's statements before its first run: the unqualified
      # `SELECT` is parsed on `t1`'s path, then analysed again once on its script's schema
      # (a path change makes PostgreSQL re-plan), as the library's per-schema statements are.
      tps=$(PGOPTIONS="-c search_path=t1,public" as_pg "$BIN/pgbench" -h "$DIR" -p "$PORT" -n -c 16 -j 2 -T "$SECS" -M "$mode" "${args[@]}" postgres 2>/dev/null \
        | awk '/^tps/ {print int($3)}')
      results[$mode/$shape]+="$tps "
      echo "round $round: -M $mode $shape: $tps tps"
    done
    q=$(echo "${results[$mode/qualified]}" | awk '{print $NF}')
    ratios[$mode]+="$(awk -v s="$tps" -v q="$q" 'BEGIN {printf "%.3f", s / q}') "
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for mode in extended prepared; do
  q=$(echo "${results[$mode/qualified]}" | median)
  s=$(echo "${results[$mode/switch]}" | median)
  echo "-M $mode: qualified $q tps, switch $s tps, switch / qualified $(awk -v s="$s" -v q="$q" 'BEGIN {printf "%.2f", s / q}'); the rounds' ratios ${ratios[$mode]}(median $(echo "${ratios[$mode]}" | median))"
done
