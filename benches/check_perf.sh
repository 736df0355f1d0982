#!/usr/bin/env bash
# `etcdctl check perf --load=LOAD` against real etcd and quorumkv (Raft and ZAB), one member
# and three, one after another on fresh data directories, on loopback.
# Usage: benches/check_perf.sh [LOAD] [systems...]   (systems: etcd1 raft1 zab1 etcd3 raft3 zab3)
# QUORUMKV_BIN names another quorumkv binary to measure (another build, say) instead of building.
# Two more one-member systems calibrate the machine (examples/check_perf_floor.rs): floor1
# answers each put after one write and fdatasync per group, nosync1 at once; neither stores.
set -uo pipefail
cd "$(dirname "$0")/.."
load=${1:-xl}
shift || true
systems=${*:-etcd1 raft1 zab1 etcd3 raft3 zab3}
bin=${QUORUMKV_BIN:-target/release/quorumkv}
if [ -z "${QUORUMKV_BIN:-}" ]; then cargo build --release --quiet; fi
case " $systems " in *" floor1 "* | *" nosync1 "*) cargo build --release --quiet --example check_perf_floor ;; esac
work=$(mktemp -d)
trap 'pkill -P $$ >/dev/null 2>&1; rm -rf "$work"' EXIT
export ETCDCTL_API=3
pids=()

start() { # start SYSTEM MEMBERS
    local sys=$1 n=$2 ic="" i
    for i in $(seq 1 "$n"); do ic="$ic${ic:+,}m$i=http://127.0.0.1:${i}2380"; done
    for i in $(seq 1 "$n"); do
        local common=(--name "m$i" --data-dir "$work/$sys-m$i" --initial-cluster "$ic"
            --listen-client-urls "http://127.0.0.1:${i}2379" --listen-peer-urls "http://127.0.0.1:${i}2380")
        if [ "$sys" = floor ] || [ "$sys" = nosync ]; then
            [ "$n" = 1 ] || { echo "$sys runs one member only" >&2; exit 2; }
            local opt=(--log-file "$work/$sys.log")
            [ "$sys" = nosync ] && opt=(--no-sync)
            target/release/examples/check_perf_floor --listen 127.0.0.1:12379 "${opt[@]}" \
                >"$work/$sys-m$i.out" 2>&1 &
        elif [ "$sys" = etcd ]; then
            etcd "${common[@]}" --advertise-client-urls "http://127.0.0.1:${i}2379" \
                --initial-advertise-peer-urls "http://127.0.0.1:${i}2380" >"$work/$sys-m$i.log" 2>&1 &
        else
            "$bin" serve "${common[@]}" --replication "$sys" >"$work/$sys-m$i.log" 2>&1 &
        fi
        pids+=($!)
    done
    sleep 3
}

stop() { # TERM, KILL after 10 s; the next system starts only once these are gone (same ports)
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null
    (sleep 10; kill -KILL "${pids[@]}" 2>/dev/null) &
    local killer=$!
    wait "${pids[@]}" 2>/dev/null
    kill "$killer" 2>/dev/null
    wait "$killer" 2>/dev/null
    pids=()
}

for s in $systems; do
    sys=${s%?}; n=${s: -1}
    start "$sys" "$n"
    eps=$(seq -s, -f "127.0.0.1:%g2379" 1 "$n")
    etcdctl --endpoints="$eps" check perf --load="$load" >"$work/$s.out" 2>&1
    result=$(tr '\r' '\n' <"$work/$s.out" | grep -E "PASS|FAIL|^Error" | tr '\n' ' ')
    [ -n "$result" ] || result="no verdict: $(tail -c 600 "$work/$s.out")"
    echo "$s: $result"
    stop
done
