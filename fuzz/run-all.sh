#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 600), one after the other, and prints
# each run's final libFuzzer stats line. Stable toolchains need RUSTC_BOOTSTRAP=1 for cargo fuzz.
set -uo pipefail
# The stateful targets keep a decoder across inputs on purpose: LeakSanitizer would take that
# state for leaks and rescan it after every input (10x slower), so it is off for them.
leaks() { case "$1" in v9|ipfix) echo -detect_leaks=0 ;; esac; }
cd "$(dirname "$0")"
secs=${1:-600}
python3 seed.py
for t in $(RUSTC_BOOTSTRAP=1 cargo fuzz list); do
  RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 $(leaks "$t") -print_final_stats=1 \
    > "logs/$t.log" 2>&1
  rc=$?
  echo "$t rc=$rc $(grep -E 'stat::number_of_executed_units' "logs/$t.log" | tail -1) $(grep -E '^#[0-9]+.*DONE' "logs/$t.log" | tail -1)"
  [ $rc -eq 0 ] || { grep -E "panicked|ERROR|SUMMARY" "logs/$t.log" | head -5; }
done
