"""A real kube-apiserver (v1.35.4) and etcd (v3.6.5) on loopback for tests, as controller-runtime's
envtest runs them: the binaries `mlopsctl tools install` builds into .tools/bin, certificates made
for the run (a CA, the server's certificate for 127.0.0.1, a client certificate in
`system:masters`, a service-account key pair), RBAC on, and a kubeconfig for the client. No
controller and no kubelet run: nothing reconciles or starts pods, which is all `validate
--server` needs.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.support.paths import TOOLS_DIR

START_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _pem(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_certificates(directory: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("mlopsctl-test-ca")
    ca = _certificate(
        ca_name, ca_key, None, [(x509.BasicConstraints(ca=True, path_length=None), True)]
    )
    _pem(ca, directory / "ca.crt")
    for name, subject, usage, alternative in (
        (
            "server",
            _name("kube-apiserver"),
            x509.ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
        ),
        (
            "client",
            _name("mlopsctl-test", "system:masters"),
            x509.ExtendedKeyUsageOID.CLIENT_AUTH,
            [],
        ),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.ExtendedKeyUsage([usage]), False)
        ]
        if alternative:
            extensions.append((x509.SubjectAlternativeName(alternative), False))
        _pem(_certificate(subject, key, (ca_name, ca_key), extensions), directory / f"{name}.crt")
        _write_key(key, directory / f"{name}.key")
    _write_key(rsa.generate_private_key(public_exponent=65537, key_size=2048), directory / "sa.key")
    service_account = serialization.load_pem_private_key((directory / "sa.key").read_bytes(), None)
    (directory / "sa.pub").write_bytes(
        service_account.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass
class TestApiServer:
    __test__ = False  # a fixture's value, not a test class

    url: str
    kubeconfig: Path
    etcd: subprocess.Popen[bytes]
    apiserver: subprocess.Popen[bytes]
    log: Path

    def unreachable_kubeconfig(self, path: Path) -> Path:
        """This server's kubeconfig pointed at a port nothing listens on."""
        path.write_text(self.kubeconfig.read_text().replace(self.url, "https://127.0.0.1:9"))
        return path

    def stop(self) -> None:
        for process in (self.apiserver, self.etcd):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def start(directory: Path) -> TestApiServer:
    directory.mkdir(parents=True, exist_ok=True)
    make_certificates(directory)
    etcd_client, etcd_peer, secure = _free_port(), _free_port(), _free_port()
    log = directory / "servers.log"
    output = log.open("ab")
    etcd = subprocess.Popen(
        [
            str(TOOLS_DIR / "bin" / "etcd"),
            f"--data-dir={directory / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # a throwaway store: durability buys nothing here
            "--log-level=warn",
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    apiserver = subprocess.Popen(
        [
            str(TOOLS_DIR / "bin" / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={secure}",
            f"--tls-cert-file={directory / 'server.crt'}",
            f"--tls-private-key-file={directory / 'server.key'}",
            f"--client-ca-file={directory / 'ca.crt'}",
            f"--service-account-key-file={directory / 'sa.pub'}",
            f"--service-account-signing-key-file={directory / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            f"--cert-dir={directory / 'certificates'}",
            "--v=0",
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{secure}"
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "test",
                        "cluster": {
                            "server": url,
                            "certificate-authority": str(directory / "ca.crt"),
                        },
                    }
                ],
                "users": [
                    {
                        "name": "test",
                        "user": {
                            "client-certificate": str(directory / "client.crt"),
                            "client-key": str(directory / "client.key"),
                        },
                    }
                ],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                "current-context": "test",
            }
        )
    )
    server = TestApiServer(url, kubeconfig, etcd, apiserver, log)
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    context.load_cert_chain(str(directory / "client.crt"), str(directory / "client.key"))
    deadline = time.monotonic() + START_SECONDS
    while True:
        for process, name in ((etcd, "etcd"), (apiserver, "kube-apiserver")):
            if process.poll() is not None:
                server.stop()
                raise RuntimeError(f"{name} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", context=context, timeout=5) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"kube-apiserver not ready in {START_SECONDS} s: {log.read_text()[-3000:]}"
            )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestApiServer]:
    """A test API server for the module (import this fixture into the test module)."""
    server = start(tmp_path_factory.mktemp("kube-apiserver"))
    yield server
    server.stop()
