"""A pytest plugin that runs kazoo's own test suite against quorumkv members.

kazoo's tests reach their servers through ``kazoo.testing.harness.get_global_cluster``; when
``QUORUMKV_BIN`` is set, this plugin replaces it with a cluster of ``quorumkv serve``
processes that has the same face as kazoo's ``ZookeeperCluster``: servers with an address,
a secure address, ``run``/``stop``/``reset``, and the TLS material kazoo's SSL test asks for.
The members are configured as kazoo configures ZooKeeper: the super-user digest of the
password ``test``, every four-letter word, and a secure client port with a certificate from
kazoo's own test CA. Without ``QUORUMKV_BIN`` the plugin does nothing, and kazoo starts real
ZooKeeper.

Settings (environment): QUORUMKV_BIN, QUORUMKV_MEMBERS (1 or 3, default 3),
QUORUMKV_PROTOCOL (raft or zab, default raft).
"""

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SUPER_DIGEST = "super:D/InIHSb7yEEbrWz8b9l71RjZJU="


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ruok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"ruok")
            return s.recv(4) == b"imok"
    except OSError:
        return False


class Member:
    """One ``quorumkv serve`` process, shaped like kazoo's ``ManagedZooKeeper``."""

    def __init__(self, cluster, index):
        self.cluster = cluster
        self.name = "m%d" % (index + 1)
        self.host = "127.0.0.1"
        self.client_port = _free_port()
        self.secure_client_port = _free_port()
        self.etcd_port = _free_port()
        self.peer_port = _free_port()
        self.working_path = os.path.join(cluster.working_path, self.name)
        self.process = None

    @property
    def address(self):
        return "%s:%s" % (self.host, self.client_port)

    @property
    def secure_address(self):
        return "%s:%s" % (self.host, self.secure_client_port)

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    def run(self):
        if self.running:
            return
        os.makedirs(self.working_path, exist_ok=True)
        peer = "http://127.0.0.1:%d" % self.peer_port
        client = "http://127.0.0.1:%d" % self.etcd_port
        tls = self.cluster.tls_files
        args = [
            self.cluster.binary, "serve",
            "--name", self.name,
            "--data-dir", os.path.join(self.working_path, "data"),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self.cluster.initial_cluster(),
            "--replication", self.cluster.protocol,
            "--listen-zookeeper-urls",
            "%s,tls://%s" % (self.address, self.secure_address),
            "--cert-file", tls["cert"],
            "--key-file", tls["key"],
            "--trusted-ca-file", tls["ca"],
            "--zookeeper-super-digest", SUPER_DIGEST,
            "--zookeeper-4lw-commands-whitelist", "*",
            "--zookeeper-max-client-cnxns", "0",
        ]
        log = open(os.path.join(self.working_path, "member.log"), "ab")
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=log
        )
        log.close()

    def wait_serving(self, deadline):
        while not _ruok(self.client_port):
            if time.time() > deadline or not self.running:
                raise RuntimeError(
                    "member %s never served: %s" % (self.name, self.get_logs(20))
                )
            time.sleep(0.1)

    def stop(self):
        if not self.running:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def reset(self):
        self.stop()
        shutil.rmtree(os.path.join(self.working_path, "data"), True)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.working_path, True)

    def get_logs(self, num_lines=100):
        path = os.path.join(self.working_path, "member.log")
        if not os.path.exists(path):
            return []
        with open(path, "r", errors="replace") as f:
            return f.readlines()[-num_lines:]


class QuorumkvCluster:
    """quorumkv members, shaped like kazoo's ``ZookeeperCluster``."""

    def __init__(self, binary, size, protocol):
        from kazoo.testing.common import ZookeeperCluster

        self.binary = binary
        self.protocol = protocol
        self.working_path = tempfile.mkdtemp(prefix="quorumkv-kazoo-")
        # kazoo's own test CA and certificates (its SSL test reads the client's).
        self._ssl = ZookeeperCluster.__new__(ZookeeperCluster)
        self._ssl._ssl_configuration = {}
        self._ssl.perform_ssl_certs_generation()
        self.tls_files = self._write_tls()
        self._servers = [Member(self, i) for i in range(size)]

    def _write_tls(self):
        """The members' certificate (for 127.0.0.1, X.509 v3 as rustls requires), signed by
        kazoo's test CA, with its key and the CA."""
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import ipaddress

        conf = self._ssl._ssl_configuration
        ca_cert = conf["ca_cert"].to_cryptography()
        ca_key = conf["ca_key"].to_cryptography_key()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        files = {
            "cert": cert.public_bytes(serialization.Encoding.PEM),
            "key": key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            "ca": conf["ca_cert_pem"],
        }
        paths = {}
        for name, data in files.items():
            path = os.path.join(self.working_path, name + ".pem")
            with open(path, "wb") as f:
                f.write(data)
            paths[name] = path
        return paths

    def initial_cluster(self):
        return ",".join(
            "%s=http://127.0.0.1:%d" % (m.name, m.peer_port) for m in self._servers
        )

    def get_ssl_client_configuration(self):
        return self._ssl.get_ssl_client_configuration()

    def __getitem__(self, k):
        return self._servers[k]

    def __iter__(self):
        return iter(self._servers)

    def start(self):
        for m in self._servers:
            m.run()
        deadline = time.time() + 60
        for m in self._servers:
            m.wait_serving(deadline)

    def stop(self):
        for m in self._servers:
            m.stop()

    def terminate(self):
        """Stops every member and forgets its data (kazoo may start them again)."""
        for m in self._servers:
            m.destroy()

    def remove(self):
        self.terminate()
        shutil.rmtree(self.working_path, True)

    def reset(self):
        for m in self._servers:
            m.reset()

    def get_logs(self):
        logs = []
        for m in self._servers:
            logs += m.get_logs()
        return logs


_CLUSTER = None


def _quorumkv_cluster():
    global _CLUSTER
    if _CLUSTER is None:
        _CLUSTER = QuorumkvCluster(
            os.environ["QUORUMKV_BIN"],
            int(os.environ.get("QUORUMKV_MEMBERS", "3")),
            os.environ.get("QUORUMKV_PROTOCOL", "raft"),
        )
        atexit.register(_CLUSTER.remove)
    return _CLUSTER


def pytest_configure(config):
    if not os.environ.get("QUORUMKV_BIN"):
        return
    import kazoo.testing.harness as harness

    harness.get_global_cluster = _quorumkv_cluster
