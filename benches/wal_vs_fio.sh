#!/usr/bin/env bash
# 256 KiB durable appends vs fio's sequential write + fdatasync of the same block size, in one
# run, alternating, with the median of each. Usage: benches/wal_vs_fio.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio >/dev/null; }
cargo build --release -q
dir="$(mktemp -d -p .)"
trap 'rm -rf "$dir"' EXIT
fio_mb=(); wal_mb=()
for _ in $(seq "$runs"); do
    fio --name=seq --directory="$dir" --rw=write --bs=256k --size=1g --fdatasync=1 \
        --ioengine=sync --output-format=json > "$dir/fio.json"
    fio_mb+=("$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["jobs"][0]["write"]["bw"]*1024/1e6)' "$dir/fio.json")")
    rm -f "$dir"/seq*
    line="$(./target/release/quorumkv bench wal --dir "$dir" --record-bytes 262144 --segment-bytes 268435456 --duration-secs 5 --json | tail -1)"
    wal_mb+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["mb_per_sec"])' "$line")")
done
python3 - "${fio_mb[*]}" "${wal_mb[*]}" <<'PY'
import statistics, sys
fio = [float(x) for x in sys.argv[1].split()]
wal = [float(x) for x in sys.argv[2].split()]
f, w = statistics.median(fio), statistics.median(wal)
print(f"fio write+fdatasync 256k: {f:.1f} MB/s (runs {fio})")
print(f"quorumkv wal 256 KiB:     {w:.1f} MB/s (runs {wal})")
print(f"ratio: {w / f:.2f}")
PY
