#!/usr/bin/env bash
# Compares quorumkv (Raft and ZAB, one member and three) with etcd on this machine: the same
# workloads (`quorumkv bench`, which speaks the etcd v3 API) against each system on loopback,
# systems alternating within each repeat (each repeat starting one system later), every system
# on fresh data directories. Reports the median throughput and p99 per workload and system, and
# the ratio to etcd of the same size, as a markdown table (BENCHMARKS.md unless --out says
# otherwise), and draws PNG charts with `quorumkv bench plot`: put throughput by client count
# and latency percentiles per system (in benches/plots for BENCHMARKS.md, else beside the
# output as NAME-plots/, with the raw results as results.jsonl so the charts can be redrawn).
#
# Usage: benches/compare.sh [--quick] [--knobs] [--tls] [--zookeeper] [--repeats N] [--out FILE]
#                            [--systems "etcd1 raft1 ..."] [--serve-flags "FLAGS"]
#   --quick: one member each, small workloads, one repeat (under a minute; run in CI).
#   --tls: what TLS costs: puts against etcd and quorumkv (Raft) in plaintext and with TLS on
#     the client and peer ports (systems named with an `s`: etcds1, rafts3; certificates made
#     with the openssl command for the run), one member and three (benches/TLS.md unless --out
#     says otherwise). Ratios of TLS systems are to etcd with TLS.
#   --zookeeper: ZooKeeper's protocol instead: real ZooKeeper 3.8 (Debian's, its default
#     forceSync; systems zk1, zk3) beside quorumkv's ZooKeeper port on Raft and ZAB, with
#     `quorumkv bench zk-create|zk-set|zk-get` at 1 session/1 client and 100 sessions/1,000
#     clients, 256 B values (benches/ZOOKEEPER.md unless --out says otherwise).
#   --serve-flags: extra flags for every quorumkv member, e.g. "--wal-backend uring",
#     "--wal-commit-delay-us 200", "--wal-pipeline-depth 1" (no pipelining),
#     "--wal-preallocate false", "--wal-batch-records-max 64".
#   --knobs: sweep the storage path's knobs instead (no etcd): Raft and ZAB, one member and
#     three, under each of the settings below, with puts from 1 and from 100 clients. The
#     table (benches/KNOBS.md unless --out says otherwise) gives throughput and p99 per setting,
#     the ratio to the defaults, and puts per leader fdatasync (from the leader's metrics).
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0 knobs=0 tls=0 zk=0 repeats=3 out="" systems="" serve_flags=""
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=1 ;;
        --knobs) knobs=1 ;;
        --tls) tls=1 ;;
        --zookeeper) zk=1 ;;
        --repeats) repeats=$2; shift ;;
        --out) out=$2; shift ;;
        --systems) systems=$2; shift ;;
        --serve-flags) serve_flags=$2; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
asked_systems=$systems
if [ $quick = 1 ]; then
    repeats=1
    systems=${systems:-etcd1 raft1 zab1}
    # name|bench arguments
    workloads=(
        "put 1 conn 1 client|put --conns 1 --clients 1 --total 300"
        "put 10 conns 100 clients|put --conns 10 --clients 100 --total 3000 --key-space-size 3000"
        "sweep put 10 clients|put --conns 10 --clients 10 --total 1000 --key-space-size 1000"
        "range-l 10 conns 100 clients|range --conns 10 --clients 100 --total 3000 --consistency l"
        "range-s 10 conns 100 clients|range --conns 10 --clients 100 --total 3000 --consistency s"
    )
else
    systems=${systems:-etcd1 raft1 zab1 etcd3 raft3 zab3}
    # etcd's published matrix (8 B keys, 256 B values) and a 1 KiB write test.
    workloads=(
        "put 1 conn 1 client|put --conns 1 --clients 1 --total 3000"
        "put 100 conns 1000 clients|put --conns 100 --clients 1000 --total 100000 --key-space-size 100000"
        "range-l 100 conns 1000 clients|range --conns 100 --clients 1000 --total 100000 --consistency l"
        "range-s 100 conns 1000 clients|range --conns 100 --clients 1000 --total 100000 --consistency s"
        "put 1 KiB 1000 clients|put --conns 100 --clients 1000 --total 50000 --val-size 1024 --key-space-size 100000"
        # With the two put rows above, the points of the throughput-by-clients chart.
        "sweep put 10 clients|put --conns 10 --clients 10 --total 10000 --key-space-size 10000"
        "sweep put 100 clients|put --conns 100 --clients 100 --total 30000 --key-space-size 30000"
        "sweep put 300 clients|put --conns 100 --clients 300 --total 50000 --key-space-size 50000"
    )
fi
if [ $tls = 1 ]; then
    out=${out:-benches/TLS.md}
    if [ $quick = 1 ]; then
        systems=${asked_systems:-etcd1 etcds1 raft1 rafts1}
        workloads=("put 10 conns 100 clients|put --conns 10 --clients 100 --total 3000 --key-space-size 3000")
    else
        systems=${asked_systems:-etcd1 etcds1 raft1 rafts1 etcd3 etcds3 raft3 rafts3}
        workloads=("put 100 conns 1000 clients|put --conns 100 --clients 1000 --total 100000 --key-space-size 100000")
    fi
fi
if [ $zk = 1 ]; then
    out=${out:-benches/ZOOKEEPER.md}
    if [ $quick = 1 ]; then
        systems=${asked_systems:-zk1 raft1}
        workloads=(
            "create 10 sessions 100 clients|zk-create --conns 10 --clients 100 --total 3000"
            "get 10 sessions 100 clients|zk-get --conns 10 --clients 100 --total 3000 --key-space-size 100"
        )
    else
        systems=${asked_systems:-zk1 raft1 zab1 zk3 raft3 zab3}
        workloads=(
            "create 1 session 1 client|zk-create --conns 1 --clients 1 --total 3000"
            "set 1 session 1 client|zk-set --conns 1 --clients 1 --total 3000 --key-space-size 100"
            "get 1 session 1 client|zk-get --conns 1 --clients 1 --total 10000 --key-space-size 100"
            "create 100 sessions 1000 clients|zk-create --conns 100 --clients 1000 --total 100000"
            "set 100 sessions 1000 clients|zk-set --conns 100 --clients 1000 --total 100000 --key-space-size 1000"
            "get 100 sessions 1000 clients|zk-get --conns 100 --clients 1000 --total 200000 --key-space-size 1000"
        )
    fi
fi
# name|serve flags: one sweep setting (the comparison runs the defaults only).
settings=("defaults|")
if [ $knobs = 1 ]; then
    out=${out:-benches/KNOBS.md}
    if [ $quick = 1 ]; then
        systems=${asked_systems:-raft1 zab1}
        settings+=("commit delay 200 µs|--wal-commit-delay-us 200")
        workloads=("put 1 client|put --conns 1 --clients 1 --total 200"
            "put 100 clients|put --conns 10 --clients 100 --total 2000 --key-space-size 2000")
    else
        systems=${asked_systems:-raft1 zab1 raft3 zab3}
        settings+=(
            "commit delay 200 µs|--wal-commit-delay-us 200"
            "commit delay 1000 µs|--wal-commit-delay-us 1000"
            "group commit of 16 records at most|--wal-batch-records-max 16"
            "io_uring|--wal-backend uring"
            "no pipelining|--wal-pipeline-depth 1"
            "no preallocation|--wal-preallocate false"
        )
        workloads=("put 1 client|put --conns 1 --clients 1 --total 3000"
            "put 100 clients|put --conns 10 --clients 100 --total 30000 --key-space-size 30000")
    fi
fi
out=${out:-BENCHMARKS.md}

bin=${QUORUMKV_BIN:-target/release/quorumkv}
if [ -z "${QUORUMKV_BIN:-}" ]; then cargo build --release --quiet; fi
if [ "$out" = BENCHMARKS.md ]; then plots=benches/plots; else plots="${out%.md}-plots"; fi
if [ $tls = 1 ] && ! command -v openssl >/dev/null 2>&1; then
    echo "== installing openssl (certificates for --tls)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] &&
    [ ! -e /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ]; then
    echo "== installing fonts-dejavu-core (chart labels)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null
fi
if [ $zk = 1 ] && [ ! -e /usr/share/java/zookeeper.jar ]; then
    echo "== installing zookeeper" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
fi
if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd-server" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
work=$(mktemp -d)
trap 'pkill -P $$ >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
results="$work/results.jsonl"
pids=()
certs="$work/certs"
if [ $tls = 1 ]; then # one CA; one certificate for 127.0.0.1 that serves and dials
    mkdir -p "$certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=bench-ca -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=member \
        -keyout "$certs/member.key" -out "$certs/member.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$certs/ext"
    openssl x509 -req -in "$certs/member.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
        -CAcreateserial -days 2 -extfile "$certs/ext" -out "$certs/member.crt" 2>/dev/null
fi

scheme_of() { # SYSTEM: https for a TLS system (named with a trailing s), else http
    case $1 in *s) echo https ;; *) echo http ;; esac
}

endpoints() { # SYSTEM MEMBERS: its client URLs (ZooKeeper addresses with --zookeeper)
    if [ $zk = 1 ]; then
        seq -s, -f "127.0.0.1:%g2181" 1 "$2"
    else
        seq -s, -f "$(scheme_of "$1")://127.0.0.1:%g2379" 1 "$2"
    fi
}

start_zookeeper() { # MEMBERS: real ZooKeeper, standalone for one member, a quorum for more
    local n=$1 i
    for i in $(seq 1 "$n"); do
        local dir="$work/zk-m$i"
        mkdir -p "$dir/data"
        echo "$i" >"$dir/data/myid"
        {
            echo "tickTime=2000"
            echo "initLimit=10"
            echo "syncLimit=5"
            echo "dataDir=$dir/data"
            echo "clientPort=${i}2181"
            echo "maxClientCnxns=0"
            echo "admin.enableServer=false"
            if [ "$n" -gt 1 ]; then
                for j in $(seq 1 "$n"); do echo "server.$j=127.0.0.1:${j}2888:${j}3888"; done
            fi
        } >"$dir/zoo.cfg"
        local main=org.apache.zookeeper.server.quorum.QuorumPeerMain
        java -cp "/usr/share/java/zookeeper.jar:/usr/share/java/*" $main "$dir/zoo.cfg" \
            >"$work/zk-m$i.log" 2>&1 &
        pids+=($!)
    done
}

start() { # start SYSTEM MEMBERS
    local sys=$1 n=$2 ic="" i scheme tls_flags=()
    scheme=$(scheme_of "$sys")
    rm -rf "$work/$sys-m"*
    if [ "$sys" = zk ]; then
        start_zookeeper "$n"
    fi
    if [ "$scheme" = https ]; then
        tls_flags=(--cert-file "$certs/member.crt" --key-file "$certs/member.key"
            --peer-cert-file "$certs/member.crt" --peer-key-file "$certs/member.key"
            --peer-trusted-ca-file "$certs/ca.pem" --peer-client-cert-auth)
    fi
    for i in $(seq 1 "$n"); do ic="$ic${ic:+,}m$i=$scheme://127.0.0.1:${i}2380"; done
    for i in $(seq 1 "$n"); do
        [ "$sys" = zk ] && break
        local common=(--name "m$i" --data-dir "$work/$sys-m$i" --initial-cluster "$ic"
            --listen-client-urls "$scheme://127.0.0.1:${i}2379" --listen-peer-urls "$scheme://127.0.0.1:${i}2380"
            --initial-advertise-peer-urls "$scheme://127.0.0.1:${i}2380" "${tls_flags[@]}")
        if [ "${sys%s}" = etcd ]; then
            etcd "${common[@]}" --advertise-client-urls "$scheme://127.0.0.1:${i}2379" >"$work/$sys-m$i.log" 2>&1 &
            pids+=($!)
        else
            # shellcheck disable=SC2086
            "$bin" serve "${common[@]}" --advertise-client-urls "$scheme://127.0.0.1:${i}2379" \
                --listen-zookeeper-urls "127.0.0.1:${i}2181" --zookeeper-max-client-cnxns 0 \
                --replication "${sys%s}" $serve_flags $setting_flags >"$work/$sys-m$i.log" 2>&1 &
            pids+=($!)
        fi
    done
    local eps
    eps=$(endpoints "$sys" "$n")
    local probe=(put --key-size 16 "${tls_bench[@]}")
    [ $zk = 1 ] && probe=(zk-create)
    for _ in $(seq 1 150); do
        if "$bin" bench "${probe[@]}" --endpoints "$eps" --total 1 --json 2>/dev/null |
            tail -1 | grep -q '"ok":1'; then
            return 0
        fi
        sleep 0.2
    done
    echo "$sys with $n members did not come up:" >&2
    tail -5 "$work/$sys-m1.log" >&2
    return 1
}

stop() { # TERM, KILL after 10 s; `wait` returns once each process is gone with its sockets
    [ ${#pids[@]} -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    (sleep 10; kill -KILL "${pids[@]}" 2>/dev/null) &
    local killer=$!
    wait "${pids[@]}" 2>/dev/null || true
    kill "$killer" 2>/dev/null || true
    wait "$killer" 2>/dev/null || true
    pids=()
}

tls_bench=()
[ $tls = 1 ] && tls_bench=(--cacert "$certs/ca.pem")

leader_first() { # EPS: the same endpoints, the leader's first (asked over the JSON gateway)
    if [ $zk = 1 ]; then # ZooKeeper clients are spread over the members as they are
        echo "$1"
        return
    fi
    python3 - "$1" "$certs/ca.pem" <<'PY'
import json, ssl, sys, urllib.request
eps = sys.argv[1].split(",")
ctx = ssl.create_default_context(cafile=sys.argv[2]) if "https://" in sys.argv[1] else None
for ep in list(eps):
    try:
        req = urllib.request.Request("%s/v3/maintenance/status" % ep, data=b"{}", method="POST")
        r = json.load(urllib.request.urlopen(req, timeout=5, context=ctx))
    except Exception:
        continue
    if r.get("leader") and r["leader"] == r.get("header", {}).get("member_id"):
        eps.remove(ep)
        eps.insert(0, ep)
        break
print(",".join(eps))
PY
}

fsyncs() { # fsyncs ENDPOINT: the member's WAL fdatasyncs so far (etcd exports the same metric)
    if [ $zk = 1 ]; then # not asked of ZooKeeper's ports
        echo 0
        return
    fi
    python3 - "$1" "$certs/ca.pem" <<'PY'
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[1].startswith("https://") else None
text = urllib.request.urlopen("%s/metrics" % sys.argv[1], timeout=5, context=ctx).read().decode()
count = "etcd_disk_wal_fsync_duration_seconds_count "
print(next((l[len(count):].split()[0] for l in text.splitlines() if l.startswith(count)), "0"))
PY
}

read -r -a system_list <<<"$systems"
for rep in $(seq 1 "$repeats"); do
    # Each repeat starts one system later, so no system always runs right after the same one
    # (whose data directory was just deleted and whose writeback may still be going on).
    k=$(((rep - 1) % ${#system_list[@]}))
    order=("${system_list[@]:k}" "${system_list[@]:0:k}")
    for setting in "${settings[@]}"; do
        label=${setting%%|*} setting_flags=${setting#*|}
        for s in "${order[@]}"; do
            sys=${s%?} n=${s: -1}
            start "$sys" "$n"
            # One connection goes to the first endpoint: the leader, as etcd's benchmark matrix
            # targets it, so the row measures the protocol rather than where the election landed.
            eps=$(leader_first "$(endpoints "$sys" "$n")")
            if [ $zk = 1 ]; then # the same unmeasured warm-up for every system
                "$bin" bench zk-create --conns 10 --clients 100 --total 20000 --endpoints "$eps" >/dev/null
            fi
            for w in "${workloads[@]}"; do
                name=${w%%|*} args=${w#*|}
                before=$(fsyncs "${eps%%,*}")
                # shellcheck disable=SC2086
                line=$("$bin" bench $args --endpoints "$eps" --json "${tls_bench[@]}" | tail -1)
                synced=$(($(fsyncs "${eps%%,*}") - before))
                echo "{\"system\":\"$s\",\"setting\":\"$label\",\"flags\":\"$setting_flags\",\"workload\":\"$name\",\"repeat\":$rep,\"leader_fsyncs\":$synced,\"result\":$line}" >>"$results"
                summary=$(echo "$line" | python3 -c "import json,sys; r=json.load(sys.stdin); print('%.0f/s p99 %.1f ms, %d failed' % (r['throughput_per_s'], r['latency']['p99_us'] / 1000, r['failed']))")
                echo "$s${setting_flags:+ ($label)} rep $rep: $name: $summary, $synced leader fsyncs" >&2
            done
            stop
        done
    done
done

sync_p50=$("$bin" bench wal --appenders 1 --sync-each --duration-secs 1 --json 2>/dev/null | tail -1 |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["p50_us"]))' 2>/dev/null || echo "?")

if [ $knobs = 0 ] && [ $tls = 0 ] && [ $zk = 0 ]; then
    mkdir -p "$plots"
    cp "$results" "$plots/results.jsonl"
    "$bin" bench plot --input "$results" --out-dir "$plots" >&2
fi
if [ $zk = 1 ] && [ $quick = 0 ]; then # one pair of charts per ZooKeeper workload
    mkdir -p "$plots"
    cp "$results" "$plots/results.jsonl"
    for b in create set get; do
        "$bin" bench plot --input "$results" --out-dir "$plots/$b" --bench "zk-$b" \
            --latency-workload "$b 100 sessions 1000 clients" >&2
    done
fi

python3 - "$results" "$out" "$quick" "$repeats" "$sync_p50" "$serve_flags" "$plots" "$knobs" "$tls" "$zk" <<'EOF'
import json, statistics, sys, os, datetime
path, out, quick, repeats, sync_p50, serve_flags, plots, knobs, tls, zk = sys.argv[1:11]
rows = [json.loads(l) for l in open(path)]
systems = list(dict.fromkeys(r["system"] for r in rows))
settings = list(dict.fromkeys(r["setting"] for r in rows))
flags = {r["setting"]: r["flags"] for r in rows}
workloads = list(dict.fromkeys(r["workload"] for r in rows))
def med(sys_, w, f, st=settings[0]):
    v = [f(r) for r in rows if (r["system"], r["setting"], r["workload"]) == (sys_, st, w)]
    return statistics.median(v) if v else None
tput = lambda r: r["result"]["throughput_per_s"]
p99 = lambda r: r["result"]["latency"]["p99_us"] / 1000
per_sync = lambda r: r["result"]["ok"] / max(r["leader_fsyncs"], 1)
failed = lambda r: r["result"]["failed"]
mode = (" --knobs" if knobs == "1" else "") + (" --tls" if tls == "1" else "") + (" --zookeeper" if zk == "1" else "") + (" --quick" if quick == "1" else "")
title = ("# Storage knobs\n" if knobs == "1" else "# What TLS costs\n" if tls == "1"
         else "# ZooKeeper's protocol: quorumkv and ZooKeeper 3.8\n" if zk == "1" else "# Benchmarks\n")
lines = [title]
lines.append(f"Generated by `benches/compare.sh{mode}` on {datetime.date.today()}: "
             f"{os.cpu_count()} cores, fdatasync p50 {sync_p50} µs "
             f"(`quorumkv bench wal --sync-each`), loopback, medians of {repeats} run(s), "
             + ("settings and systems alternating within each run, the leader first among the "
                "endpoints. Each setting is one `quorumkv serve` flag; ratios are to the "
                "defaults of the same system. Throughput in puts/s, p99 in ms; puts/fsync is the "
                "puts answered over the leader's WAL fdatasyncs meanwhile (group commit at work)."
                if knobs == "1" else
                "systems alternating within each run (each run starting one system later). "
                + ("Each system first takes 20,000 creates unmeasured (ZooKeeper's JIT warms "
                   "up). " if zk == "1" else "The leader is first among the endpoints (so one "
                   "connection talks to the leader; more spread over every member). ")
                + "Ratios are "
                + ("to ZooKeeper with the same number of members (sessions spread over the "
                   "members as given, as ZooKeeper's clients spread them)" if zk == "1" else
                   "to etcd with the same number of members")
                + (" and the same transport (systems ending in `s` run TLS on the client and "
                   "peer ports, peers mutual)" if tls == "1" else "")
                + ". Throughput in requests/s; p99 in ms.")
             + (f" quorumkv members ran with `{serve_flags}`." if serve_flags else "") + "\n")
if knobs == "1":
    for n in sorted({s[-1] for s in systems}):
        group = [s for s in systems if s[-1] == n]
        for w in workloads:
            lines.append(f"\n## {w}, {n} member{'s' if n != '1' else ''}\n")
            lines.append("| setting | " + " | ".join(f"{s} puts/s | {s} p99 | {s} puts/fsync"
                                                    for s in group) + " |")
            lines.append("|---" * (1 + 3 * len(group)) + "|")
            for st in settings:
                cells = []
                for s in group:
                    t = med(s, w, tput, st)
                    if t is None:
                        cells += ["-", "-", "-"]
                        continue
                    base = med(s, w, tput)
                    ratio = f" ({t / base:.2f}×)" if base and st != settings[0] else ""
                    fail = med(s, w, failed, st)
                    fail_note = f", {fail:.0f} failed" if fail else ""
                    cells += [f"{t:,.0f}{ratio}{fail_note}", f"{med(s, w, p99, st):.1f}",
                              f"{med(s, w, per_sync, st):.1f}"]
                name = st + (f" (`{flags[st]}`)" if flags[st] else "")
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
if knobs == "0":
    for n in sorted({s[-1] for s in systems}):
        group = [s for s in systems if s[-1] == n]
        lines.append(f"\n## {n} member{'s' if n != '1' else ''}\n")
        header = "| workload | " + " | ".join(f"{s} req/s | {s} p99" for s in group) + " |"
        lines.append(header)
        lines.append("|---" * (1 + 2 * len(group)) + "|")
        for w in workloads:
            cells = []
            for s in group:
                t = med(s, w, tput)
                if t is None:
                    cells += ["-", "-"]
                    continue
                peer = "zk" if zk == "1" else "etcd"
                base = med(f"{peer}{'s' if s[:-1].endswith('s') else ''}{n}", w, tput)
                ratio = f" ({t / base:.2f}×)" if base and not s.startswith(peer) else ""
                fail = med(s, w, failed)
                fail_note = f", {fail:.0f} failed" if fail else ""
                cells += [f"{t:,.0f}{ratio}{fail_note}", f"{med(s, w, p99):.1f}"]
            lines.append(f"| {w} | " + " | ".join(cells) + " |")
        if tls == "1":
            for w in workloads:
                for s in ("etcd", "raft", "zab"):
                    plain, secure = med(f"{s}{n}", w, tput), med(f"{s}s{n}", w, tput)
                    if plain and secure:
                        lines.append(f"\n{s}, {n} member{'s' if n != '1' else ''}, {w}: TLS "
                                     f"keeps {secure / plain:.0%} of plaintext throughput.")
if zk == "1" and quick == "0":
    rel = os.path.relpath(plots, os.path.dirname(os.path.abspath(out)))
    lines.append("\n## Charts\n")
    for b in ("create", "set", "get"):
        lines.append(f"{b.capitalize()}s by number of clients, and latency percentiles at 1,000 "
                     f"clients:\n\n![{b} throughput by clients]({rel}/{b}/throughput_vs_clients.png)"
                     f"\n![{b} latency percentiles]({rel}/{b}/latency_percentiles.png)\n")
if tls == "1" or zk == "1":
    pass
elif knobs == "0":
    rel = os.path.relpath(plots, os.path.dirname(os.path.abspath(out)))
    lines.append("\n## Charts\n")
    lines.append(f"Put throughput by number of clients (the put rows above, 256 B values):\n\n"
                 f"![put throughput by clients]({rel}/throughput_vs_clients.png)\n")
    lines.append(f"Latency percentiles of the put workload with the most clients:\n\n"
                 f"![latency percentiles]({rel}/latency_percentiles.png)\n")
    knobs_md = os.path.relpath("benches/KNOBS.md", os.path.dirname(os.path.abspath(out)))
    lines.append("\n## Storage knobs\n")
    lines.append("What the WAL's flags (group commit delay and cap, io_uring, pipelining, "
                 f"preallocation) do to these figures, Raft and ZAB: [KNOBS.md]({knobs_md}), "
                 "regenerated by `benches/compare.sh --knobs`.")
    scale_md = os.path.relpath("benches/SCALE.md", os.path.dirname(os.path.abspath(out)))
    lines.append("\n## Cost as the data grows\n")
    lines.append("Puts, reads, ranges, memory, file size, restart and write pauses through "
                 f"compaction and defragment, from 100k to 4M keys: [SCALE.md]({scale_md}), "
                 "regenerated by `benches/scale.sh`.")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
