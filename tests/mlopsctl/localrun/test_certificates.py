"""The run's certificate authority, judged as the pods' clients judge it: a real TLS server on
loopback with the certificate `issue` made, and Python's ssl (OpenSSL underneath, as git's curl)
as the client, trusting the run's CA, the system roots, or the bundle that joins them."""

from __future__ import annotations

import contextlib
import datetime
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mlopsctl.base.errors import LocalRunError
from mlopsctl.localrun import certificates
from tests.support.loopback import accepting
from tests.support.pki import Pki, make_pki

GREETING = b"hello"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), ["github.com", "*.pods.example.test"])


@contextlib.contextmanager
def tls_server(chain: Path, key: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 presenting `chain`, greeting every client that completes the
    handshake; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(chain), str(key))

    def greet(connection: socket.socket) -> None:
        connection.settimeout(10)
        # A client that refuses the certificate aborts the handshake: nothing to answer.
        with (
            connection,
            contextlib.suppress(OSError),
            context.wrap_socket(connection, server_side=True) as tls,
        ):
            tls.sendall(GREETING)

    with accepting(socket.create_server(("127.0.0.1", 0)), greet) as port:
        yield port


@pytest.fixture(scope="module")
def git_host(pki: Pki) -> Iterator[int]:
    with tls_server(pki.server.certificate, pki.server.key) as port:
        yield port


def greeting(port: int, server_name: str, context: ssl.SSLContext) -> bytes:
    """What a client connecting to 127.0.0.1:`port` for `server_name` receives."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return tls.recv(len(GREETING))


def trusting(cafile: Path) -> ssl.SSLContext:
    """A client that trusts `cafile` only, verifying names as curl and git do."""
    return ssl.create_default_context(cafile=str(cafile))


@pytest.mark.parametrize("name", ["github.com", "127.0.0.1", "git.pods.example.test"])
def test_a_client_trusting_the_run_ca_accepts_the_server_for_its_names(
    pki: Pki, git_host: int, name: str
) -> None:
    assert greeting(git_host, name, trusting(pki.authority.certificate)) == GREETING


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("gitlab.com", "Hostname mismatch"),
        ("www.github.com", "Hostname mismatch"),
        # A wildcard stands for one label, and never for the bare domain.
        ("pods.example.test", "Hostname mismatch"),
        ("a.b.pods.example.test", "Hostname mismatch"),
        ("127.0.0.2", "IP address mismatch"),
    ],
)
def test_a_client_refuses_the_server_for_any_other_name(
    pki: Pki, git_host: int, name: str, problem: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        greeting(git_host, name, trusting(pki.authority.certificate))
    assert problem in refused.value.verify_message


def test_a_client_trusting_only_the_system_roots_refuses_the_server(git_host: int) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        greeting(git_host, "github.com", ssl.create_default_context())


def test_the_bundle_trusts_the_run_ca_and_every_system_root(pki: Pki, git_host: int) -> None:
    """What a pod's /etc/ssl/certs/ca-certificates.crt becomes: the git host is trusted, and so
    is everything the pod trusted before (package indexes, public endpoints)."""
    assert greeting(git_host, "github.com", trusting(pki.bundle)) == GREETING
    system = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    system.load_verify_locations(cafile=str(certificates.SYSTEM_BUNDLE))
    roots = set(system.get_ca_certs(binary_form=True))
    assert roots, "the system bundle holds no root to keep"
    own = ssl.PEM_cert_to_DER_cert(pki.authority.certificate.read_text())
    assert set(trusting(pki.bundle).get_ca_certs(binary_form=True)) == roots | {own}
    # Written beside and renamed: nothing half-written is left next to it.
    assert [path.name for path in pki.bundle.parent.glob(".*partial")] == []


def test_the_git_hosts_certificate_cannot_vouch_for_another_name(pki: Pki, tmp_path: Path) -> None:
    """A leaked server key signs nothing a pod trusts: the certificate is not a CA."""
    server_key = serialization.load_pem_private_key(pki.server.key.read_bytes(), None)
    assert isinstance(server_key, ec.EllipticCurvePrivateKey)
    server_certificate = x509.load_pem_x509_certificate(pki.server.certificate.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "evil.test")]))
        .issuer_name(server_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.test")]), False)
        .sign(server_key, hashes.SHA256())
    )
    chain = tmp_path / "chain.crt"
    chain.write_bytes(
        forged.public_bytes(serialization.Encoding.PEM) + pki.server.certificate.read_bytes()
    )
    forged_key = tmp_path / "evil.key"
    forged_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with (
        tls_server(chain, forged_key) as port,
        pytest.raises(ssl.SSLCertVerificationError, match="invalid CA certificate"),
    ):
        greeting(port, "evil.test", trusting(pki.bundle))


def openssl_verify(pki: Pki, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(pki.authority.certificate),
            "-purpose",
            "sslserver",
            *options,
            str(pki.server.certificate),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_certificates_are_worthless_after_a_day(pki: Pki) -> None:
    now = datetime.datetime.now(datetime.UTC)
    assert openssl_verify(pki).returncode == 0
    in_two_days = int((now + datetime.timedelta(days=2)).timestamp())
    expired = openssl_verify(pki, "-attime", str(in_two_days))
    assert expired.returncode != 0
    assert "certificate has expired" in expired.stdout + expired.stderr


def test_certificates_refuse_what_they_cannot_carry(pki: Pki, tmp_path: Path) -> None:
    refused = tmp_path / "refused"
    with pytest.raises(LocalRunError, match="not a DNS name"):
        certificates.issue(pki.authority, refused, ["github.com\nCN = evil"])
    with pytest.raises(LocalRunError, match="not an IP address"):
        certificates.issue(pki.authority, refused, ["github.com"], ["10.0.0.300"])
    with pytest.raises(LocalRunError, match="at least one"):
        certificates.issue(pki.authority, refused, [])
    with pytest.raises(LocalRunError, match="certificate authority name"):
        certificates.create_authority(refused, "run\n[authority]\nbasicConstraints = x")
    # Refused before anything was written.
    assert not refused.exists()
    with pytest.raises(LocalRunError, match="system CA bundle"):
        certificates.bundle_with_system_roots(pki.authority, tmp_path / "b", tmp_path / "none")
    broken = certificates.Authority("broken", pki.authority.certificate, tmp_path / "missing.key")
    with pytest.raises(LocalRunError, match="openssl x509 failed"):
        certificates.issue(broken, tmp_path, ["github.com"])


def test_keys_are_readable_by_their_owner_only(pki: Pki) -> None:
    assert pki.authority.key.stat().st_mode & 0o777 == 0o600
    assert pki.server.key.stat().st_mode & 0o777 == 0o600
    assert pki.server.certificate.stat().st_mode & 0o777 == 0o644
    system = certificates.SYSTEM_BUNDLE.read_bytes()
    bundle = pki.bundle.read_bytes()
    assert bundle.startswith(system) and pki.authority.certificate.read_bytes() in bundle
