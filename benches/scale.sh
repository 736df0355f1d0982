#!/usr/bin/env bash
# Cost as the data grows: quorumkv (Raft, one member and three) and etcd (one member), each
# filled on fresh data directories to 100k, 1M and 4M keys (256 B values, Kubernetes-like
# names: /registry/pods/ns-NN/pod-N, 100 shared prefixes), one system after another on this
# machine. At each size:
#   - puts at 1,000 clients over 100 connections, random keys of the set: throughput and p99.
#     A fixed number of them (an eighth of the keys, at least 300,000), not a fixed time, so
#     that every system holds the same history when its file is measured;
#   - linearizable point reads and 1,000-key range reads at 100 clients: p99;
#   - resident memory (VmRSS of the largest member) and the database file (the largest
#     member's: quorumkv's member/db, etcd's member/snap/db);
#   - restart: every member stopped (SIGTERM) and started again on its data, until a put is
#     answered;
#   - the longest write pause while half the history is compacted (etcdctl compact --physical)
#     and every member defragmented: the slowest put of a stream of 10 clients at 1,000 puts/s
#     running through both.
# Writes a markdown table (benches/SCALE.md unless --out says otherwise) and the raw results
# beside it (SCALE.jsonl).
#
# Usage: benches/scale.sh [--quick] [--sizes "100000 1000000 4000000"]
#                         [--systems "raft1 raft3 etcd1"] [--out FILE]
#   --quick: 2,000 and 5,000 keys, shorter streams (under two minutes; run in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 sizes="" systems="raft1 raft3 etcd1" out=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --sizes) sizes=$2; shift ;;
        --systems) systems=$2; shift ;;
        --out) out=$2; shift ;;
        *) echo "unknown flag $1" >&2; exit 2 ;;
    esac
    shift
done
if [ $quick = 1 ]; then
    sizes=${sizes:-2000 5000}
    measure=1s pause_stream=4 puts_min=5000
else
    sizes=${sizes:-100000 1000000 4000000}
    measure=10s pause_stream=0 puts_min=300000
fi
out=${out:-benches/SCALE.md}
raw="${out%.md}.jsonl"

bin=${QUORUMKV_BIN:-target/release/quorumkv}
if [ -z "${QUORUMKV_BIN:-}" ]; then cargo build --release --quiet; fi
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
    echo "== installing etcd-server and etcd-client" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
work=$(mktemp -d -p "${SCALE_TMP:-/tmp}")
trap 'pkill -P $$ >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
: >"$raw"
pids=()
# Both systems get room for the largest size and its history (etcd's default is 2 GiB).
quota=$((16 << 30))
shape=(--key-shape k8s --key-size 8 --val-size 256)

endpoints() { seq -s, -f "http://127.0.0.1:%g2379" 1 "$1"; }

launch() { # SYSTEM MEMBERS: starts the members on their data directories (new or not)
    local sys=$1 n=$2 ic="" i
    for i in $(seq 1 "$n"); do ic="$ic${ic:+,}m$i=http://127.0.0.1:${i}2380"; done
    for i in $(seq 1 "$n"); do
        local common=(--name "m$i" --data-dir "$work/$sys-m$i" --initial-cluster "$ic"
            --listen-client-urls "http://127.0.0.1:${i}2379"
            --advertise-client-urls "http://127.0.0.1:${i}2379"
            --listen-peer-urls "http://127.0.0.1:${i}2380"
            --initial-advertise-peer-urls "http://127.0.0.1:${i}2380"
            --quota-backend-bytes "$quota")
        if [ "$sys" = etcd ]; then
            etcd "${common[@]}" >>"$work/$sys-m$i.log" 2>&1 &
        else
            "$bin" serve "${common[@]}" --replication "$sys" --listen-zookeeper-urls "127.0.0.1:${i}2181" \
                >>"$work/$sys-m$i.log" 2>&1 &
        fi
        pids+=($!)
    done
}

serving() { # MEMBERS: waits until a put is answered; fails after 5 minutes
    local eps i
    eps=$(endpoints "$1")
    for i in $(seq 1 3000); do
        if "$bin" bench put --endpoints "$eps" --key-size 16 --total 1 --json 2>/dev/null |
            tail -1 | grep -q '"ok":1'; then
            return 0
        fi
        sleep 0.1
    done
    echo "the members never served" >&2
    return 1
}

stop() { # TERM, KILL after 60 s; returns once every member is gone
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    # Its own output closed, so a sleep it leaves behind holds no pipe of the caller open.
    (exec >/dev/null 2>&1; sleep 60; kill -KILL "${pids[@]}") &
    local killer=$!
    wait "${pids[@]}" 2>/dev/null || true
    kill "$killer" 2>/dev/null || true
    wait "$killer" 2>/dev/null || true
    pids=()
}

bench() { # ARGS...: one `quorumkv bench` run; prints its JSON line (the run fails loudly)
    "$bin" bench "$@" --json 2>"$work/bench.err" | tail -1 || {
        cat "$work/bench.err" >&2
        return 1
    }
}

rss_bytes() { # the largest VmRSS among the members, in bytes
    local p max=0 kb
    for p in "${pids[@]}"; do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null || echo 0)
        [ "${kb:-0}" -gt "$max" ] && max=$kb
    done
    echo $((max * 1024))
}

db_bytes() { # SYSTEM MEMBERS: the largest member's database file, in bytes
    local sys=$1 n=$2 i f max=0 b
    for i in $(seq 1 "$n"); do
        f="$work/$sys-m$i/member/db"
        [ "$sys" = etcd ] && f="$work/$sys-m$i/member/snap/db"
        b=$(stat -c %s "$f" 2>/dev/null || echo 0)
        [ "$b" -gt "$max" ] && max=$b
    done
    echo "$max"
}

revision() { # EPS: the cluster's revision
    etcdctl --endpoints "$1" endpoint status -w json 2>/dev/null |
        python3 -c 'import json,sys; print(max(s["Status"]["header"]["revision"] for s in json.load(sys.stdin)))'
}

for system in $systems; do
    sys=${system%[0-9]*} n=${system##*[a-z]}
    rm -rf "$work/$sys-m"*
    launch "$sys" "$n"
    serving "$n"
    eps=$(endpoints "$n")
    filled=0
    for size in $sizes; do
        echo "== $system: filling to $size keys" >&2
        bench put --endpoints "$eps" --conns 100 --clients 1000 "${shape[@]}" \
            --sequential-keys --key-offset "$filled" --key-space-size "$size" \
            --total $((size - filled)) >/dev/null
        filled=$size
        echo "== $system, $size keys: puts, reads, ranges" >&2
        puts=$((size / 8 > puts_min ? size / 8 : puts_min))
        put=$(bench put --endpoints "$eps" --conns 100 --clients 1000 "${shape[@]}" \
            --key-space-size "$size" --total "$puts")
        get=$(bench range --endpoints "$eps" --conns 10 --clients 100 "${shape[@]}" \
            --key-space-size "$size" --duration "$measure")
        scan=$(bench range --endpoints "$eps" --conns 10 --clients 100 "${shape[@]}" \
            --key-space-size "$size" --duration "$measure" --range-keys 1000)
        rss=$(rss_bytes)
        db=$(db_bytes "$sys" "$n")
        echo "== $system, $size keys: compaction of half the history, then defragment" >&2
        rev=$(revision "$eps")
        # Long enough to see both through: a stream of 1,000 puts/s at 10 clients.
        secs=$pause_stream
        [ "$secs" = 0 ] && secs=$((20 + size / 50000))
        bench put --endpoints "$eps" --conns 10 --clients 10 --rate 1000 "${shape[@]}" \
            --key-space-size "$size" --duration "${secs}s" >"$work/pause.json" &
        stream=$!
        sleep 1
        started=$(date +%s.%N)
        etcdctl --endpoints "$eps" --command-timeout 600s compact --physical $((rev / 2)) >/dev/null
        compacted=$(date +%s.%N)
        etcdctl --endpoints "$eps" --command-timeout 600s defrag >/dev/null
        defragged=$(date +%s.%N)
        wait $stream
        pause=$(tail -1 "$work/pause.json")
        done_in=$(python3 -c "print($defragged - $started + 1)")
        if python3 -c "import sys; sys.exit(0 if $done_in <= $secs else 1)"; then :; else
            echo "   (compaction and defragment outlasted the ${secs} s stream)" >&2
        fi
        echo "== $system, $size keys: restart" >&2
        stop
        restart_start=$(date +%s.%N)
        launch "$sys" "$n"
        serving "$n"
        restart_s=$(python3 -c "print(round($(date +%s.%N) - $restart_start, 2))")
        python3 - "$system" "$size" "$rss" "$db" "$restart_s" \
            "$(python3 -c "print(round($compacted - $started, 2))")" \
            "$(python3 -c "print(round($defragged - $compacted, 2))")" \
            "$put" "$get" "$scan" "$pause" >>"$raw" <<'PY'
import json, sys
system, size, rss, db, restart, compact, defrag = sys.argv[1:8]
put, get, scan, pause = (json.loads(a) for a in sys.argv[8:12])
print(json.dumps({
    "system": system, "keys": int(size), "rss_bytes": int(rss), "db_bytes": int(db),
    "restart_s": float(restart), "compact_s": float(compact), "defrag_s": float(defrag),
    "put_per_s": put["throughput_per_s"], "put_p99_ms": put["latency"]["p99_us"] / 1000,
    "put_failed": put["failed"], "get_p99_ms": get["latency"]["p99_us"] / 1000,
    "range_p99_ms": scan["latency"]["p99_us"] / 1000,
    "pause_ms": pause["latency"]["max_us"] / 1000, "pause_failed": pause["failed"],
}))
PY
    done
    stop
    rm -rf "$work/$sys-m"*
done

python3 - "$raw" "$out" "$quick" "$sizes" <<'PY'
import json, sys
raw, out, quick, sizes = sys.argv[1:5]
rows = [json.loads(l) for l in open(raw) if l.strip()]
def mib(b): return f"{b / (1 << 20):,.0f}"
lines = [
    "# Cost as the data grows",
    "",
    "Generated by `benches/scale.sh" + (" --quick" if quick == "1" else "") + "`: each system"
    " filled on fresh data directories to " + ", ".join(f"{int(s):,}" for s in sizes.split()) +
    " keys (256 B values, names `/registry/pods/ns-NN/pod-N`), one system after another on"
    " this machine (2 cores, loopback). Puts at 1,000 clients over 100 connections, the same"
    " number for every system (an eighth of the keys or more), so each stores the same"
    " history; reads and"
    " 1,000-key ranges (linearizable) at 100 clients; memory is the largest member's resident"
    " set; restart is every member stopped and started until a put is answered; the pause is"
    " the slowest put of a 1,000 puts/s stream while half the history is compacted and every"
    " member defragmented.",
    "",
    "| system | keys | puts/s | put p99 ms | get p99 ms | 1,000-key range p99 ms | RSS MiB |"
    " db MiB | restart s | compact s | defrag s | longest write pause ms |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    failed = f" ({r['put_failed']} failed)" if r["put_failed"] else ""
    lines.append(
        f"| {r['system']} | {r['keys']:,} | {r['put_per_s']:,.0f}{failed} | {r['put_p99_ms']:.1f} |"
        f" {r['get_p99_ms']:.1f} | {r['range_p99_ms']:.1f} | {mib(r['rss_bytes'])} |"
        f" {mib(r['db_bytes'])} | {r['restart_s']:.2f} | {r['compact_s']:.2f} |"
        f" {r['defrag_s']:.2f} | {r['pause_ms']:.0f} |")
by = {}
for r in rows:
    by.setdefault(r["system"], []).append(r)
lines += ["", "Put throughput at the largest size against the smallest:", ""]
for system, rs in by.items():
    if len(rs) > 1 and rs[0]["put_per_s"] > 0:
        lines.append(f"- {system}: {rs[-1]['put_per_s'] / rs[0]['put_per_s']:.0%}")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
