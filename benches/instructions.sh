#!/usr/bin/env bash
# Instructions per packet of every contender (callgrind counts instructions, not time: the same
# on a loaded machine). Runs the bench binary with BENCH_ITERS=0 and =N and divides the difference.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p netflow-benches --bin bench
n=${1:-2000}
count() { BENCH_ITERS=$2 valgrind --tool=callgrind --callgrind-out-file=/dev/null ./target/release/bench "$1" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,; }
echo "| packet | decoder | instructions/packet |"
echo "|---|---|---:|"
for c in "v5" "v9 IPv4" "v9 IPv6" "IPFIX IPv4"; do
  for d in "netflow-wire" "netflow_parser 1.0.6" "netgauze-flow-pkt 0.13"; do
    [ "$c" = v5 ] && [ "$d" = "netgauze-flow-pkt 0.13" ] && continue
    a=$(count "$c $d" 0); b=$(count "$c $d" "$n")
    echo "| $c | $d | $(( (b - a) / n )) |"
  done
done
