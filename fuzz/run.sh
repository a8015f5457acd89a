#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after another,
# starting from the seed corpus (seeds/TARGET) and keeping what it grows in
# corpus/TARGET. Stops at the first crash, leaving it in artifacts/TARGET.
# Needs the nightly toolchain and cargo-fuzz.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-60}
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -O
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "==> $t for ${seconds}s"
  cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len=70000 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/"
done
