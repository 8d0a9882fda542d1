"""The local run's own certificate authority, through the `openssl` command.

The pods reach the git host the Applications name (`https://github.com/...`) over real TLS:
the run creates a CA that lives one day, issues the git host a certificate for that name, and
bind-mounts a CA bundle (the system roots plus the run's CA) over the pods' own bundle, so git
in a pod verifies the server exactly as it would verify github.com.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlopsctl.base.errors import LocalRunError

# A day is longer than any local run and short enough that a leaked key is soon worthless.
VALIDITY_DAYS = 1
OPENSSL_TIMEOUT_SECONDS = 60
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

# Names go into an openssl configuration file: only what a DNS name may hold gets there.
_DNS_NAME = re.compile(
    r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_COMMON_NAME = re.compile(r"^[A-Za-z0-9 ._-]{1,64}$")


@dataclass(frozen=True)
class Authority:
    """A CA of the run: its certificate (to trust) and its key (to sign with)."""

    name: str
    certificate: Path
    key: Path


@dataclass(frozen=True)
class ServerCertificate:
    """A server's key and certificate, signed by an `Authority`, for the names it answers to."""

    certificate: Path
    key: Path
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]


def create_authority(directory: Path, name: str) -> Authority:
    """A new CA in `directory`: `<directory>/ca.key` (owner-only) and `<directory>/ca.crt`."""
    if not _COMMON_NAME.match(name):
        raise LocalRunError(
            f"certificate authority name {name!r}: use 1-64 letters, digits, spaces, '.', '_', '-'"
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "ca.key"
    certificate = directory / "ca.crt"
    configuration = directory / "ca.cnf"
    configuration.write_text(
        "[req]\n"
        "prompt = no\n"
        "distinguished_name = subject\n"
        "x509_extensions = authority\n"
        "[subject]\n"
        f"CN = {name}\n"
        "[authority]\n"
        "basicConstraints = critical, CA:TRUE, pathlen:0\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    _write_private_key(key)
    _openssl(
        "req",
        "-new",
        "-x509",
        "-config",
        str(configuration),
        "-key",
        str(key),
        "-days",
        str(VALIDITY_DAYS),
        "-sha256",
        "-out",
        str(certificate),
    )
    certificate.chmod(0o644)
    return Authority(name=name, certificate=certificate, key=key)


def issue(
    authority: Authority,
    directory: Path,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
) -> ServerCertificate:
    """A server key (owner-only) and certificate for `dns_names` and `ip_addresses`, signed by
    `authority`, written as `<directory>/<first name>.key` and `.crt`."""
    names = tuple(dns_names)
    addresses = tuple(_checked_address(address) for address in ip_addresses)
    if not names and not addresses:
        raise LocalRunError("a server certificate needs at least one DNS name or IP address")
    for name in names:
        if not _DNS_NAME.match(name):
            raise LocalRunError(f"{name!r} is not a DNS name a certificate can carry")
    stem = (names[0] if names else addresses[0]).replace("*", "wildcard").replace(":", "_")
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{stem}.key"
    request = directory / f"{stem}.csr"
    certificate = directory / f"{stem}.crt"
    configuration = directory / f"{stem}.cnf"
    alternative_names = [f"DNS:{name}" for name in names] + [f"IP:{a}" for a in addresses]
    configuration.write_text(
        "[req]\n"
        "prompt = no\n"
        "distinguished_name = subject\n"
        "[subject]\n"
        f"CN = {names[0] if names else addresses[0]}\n"
        "[server]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        f"subjectAltName = {', '.join(alternative_names)}\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid:always\n"
    )
    _write_private_key(key)
    _openssl("req", "-new", "-config", str(configuration), "-key", str(key), "-out", str(request))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(request),
        "-CA",
        str(authority.certificate),
        "-CAkey",
        str(authority.key),
        "-days",
        str(VALIDITY_DAYS),
        "-sha256",
        "-extfile",
        str(configuration),
        "-extensions",
        "server",
        "-out",
        str(certificate),
    )
    request.unlink()
    certificate.chmod(0o644)
    return ServerCertificate(
        certificate=certificate, key=key, dns_names=names, ip_addresses=addresses
    )


def bundle_with_system_roots(
    authority: Authority, destination: Path, system_bundle: Path = SYSTEM_BUNDLE
) -> Path:
    """`destination`: the system's trusted roots followed by the run's CA, world-readable.

    This is the file bind-mounted over a pod's CA bundle: the pod keeps trusting what it trusted
    (package indexes, public endpoints) and also trusts the run's git host."""
    try:
        roots = system_bundle.read_bytes()
    except OSError as error:
        raise LocalRunError(
            f"cannot read the system CA bundle {system_bundle}: {error.strerror} "
            "(install Debian's ca-certificates)"
        ) from error
    own = authority.certificate.read_bytes()
    if roots and not roots.endswith(b"\n"):
        roots += b"\n"
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Written beside and renamed, so a pod never sees half a bundle.
    partial = destination.with_name(f".{destination.name}.partial")
    partial.write_bytes(roots + b"# " + authority.name.encode() + b" (mlopsctl local run)\n" + own)
    partial.chmod(0o644)
    partial.replace(destination)
    return destination


def _checked_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError as error:
        raise LocalRunError(f"{address!r} is not an IP address a certificate can carry") from error


def _write_private_key(path: Path) -> None:
    """An EC P-256 key, created owner-only so it is never readable by others, even briefly."""
    pem = _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)


def _openssl(*arguments: str) -> bytes:
    try:
        completed = subprocess.run(
            ["openssl", *arguments],
            capture_output=True,
            check=False,
            timeout=OPENSSL_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as error:
        raise LocalRunError("the openssl command is not installed (apt-get install openssl)") from (
            error
        )
    except subprocess.TimeoutExpired as error:
        raise LocalRunError(
            f"openssl {arguments[0]} did not finish in {OPENSSL_TIMEOUT_SECONDS} s"
        ) from error
    if completed.returncode != 0:
        message = completed.stderr.decode(errors="replace").strip()
        raise LocalRunError(f"openssl {arguments[0]} failed: {message}")
    return completed.stdout
