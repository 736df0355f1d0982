#!/usr/bin/env bash
# Runs everything CI runs: formatting, clippy with warnings denied, and the whole test suite.
# Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi

# The client tests drive real etcd clients: etcdctl (Debian's etcd-client) and python-etcd3.
if ! command -v etcdctl >/dev/null 2>&1; then
    echo "== installing etcd-client (etcdctl)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-client >/dev/null
fi
# The benchmark comparison runs real etcd beside quorumkv (Debian's etcd-server).
if ! command -v etcd >/dev/null 2>&1; then
    echo "== installing etcd-server"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
# The ZooKeeper codec is checked against ZooKeeper's own classes: Debian's zookeeper (its jars,
# zkCli.sh) and a JDK to compile the check.
if [ ! -e /usr/share/java/zookeeper-jute.jar ]; then
    echo "== installing zookeeper"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >/dev/null
fi
# Curator's recipes run against a cluster's ZooKeeper ports.
if [ ! -e /usr/share/java/curator-recipes.jar ]; then
    echo "== installing libcurator-recipes-java"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcurator-recipes-java \
        libcurator-framework-java libcurator-client-java >/dev/null
fi
if ! command -v javac >/dev/null 2>&1; then
    echo "== installing default-jdk-headless"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless >/dev/null
fi
# A ZooKeeper test runs one member a day behind, and chaos steps members' clocks (libfaketime).
if [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ]; then
    echo "== installing faketime"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null
fi
# Benchmark charts need a TrueType font for their labels.
if [ ! -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] &&
    [ ! -e /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ]; then
    echo "== installing fonts-dejavu-core"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-dejavu-core >/dev/null
fi
if ! PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python python3 -c "import etcd3" >/dev/null 2>&1; then
    echo "== installing python etcd3"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    python3 -m pip install -q etcd3 || python3 -m pip install -q --break-system-packages etcd3
fi

# The ZooKeeper port is checked with kazoo, the Python ZooKeeper client.
if ! python3 -c "import kazoo" >/dev/null 2>&1; then
    echo "== installing python kazoo"
    python3 -m pip install -q kazoo || python3 -m pip install -q --break-system-packages kazoo
fi
# kazoo's own test suite runs through pytest, and its harness makes certificates with pyOpenSSL
# (before 24.3, which dropped X509Extension) and pyjks; one of its files imports objgraph.
if ! python3 -c "import pytest, jks, objgraph, OpenSSL.crypto as c; c.X509Extension" >/dev/null 2>&1; then
    echo "== installing pytest, pyOpenSSL and pyjks"
    python3 -m pip install -q pytest "pyopenssl<24.3" pyjks objgraph ||
        python3 -m pip install -q --break-system-packages pytest "pyopenssl<24.3" pyjks objgraph
fi

# ... and the Node.js etcd3 client (npm), kept under target/ so it is fetched once per clone.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "== installing nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -f target/node-clients/node_modules/etcd3/package.json ]; then
    echo "== installing npm etcd3"
    mkdir -p target/node-clients
    npm install --prefix target/node-clients --no-audit --no-fund --loglevel=error etcd3@1.1.2
fi

echo "== fmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== the embeddable library pulls in no tool dependencies"
tools="$(cargo tree -p quorumkv --no-default-features -e normal --prefix none --locked |
    grep -E '^(plotters|indicatif|hdrhistogram|mimalloc|libmimalloc-sys|clap|tracing-subscriber) ' || true)"
if [ -n "$tools" ]; then
    echo "quorumkv with default-features = false depends on tools:" >&2
    echo "$tools" >&2
    exit 1
fi
echo "== tests"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked -- --nocapture 2>&1 | tee "$log"
echo "== benches, each run once (criterion's test mode), so one that cannot start fails here"
cargo test --workspace --bench '*' --locked 2>&1 | tee -a "$log"
# One summary line over every test binary.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, i }' "$log"
