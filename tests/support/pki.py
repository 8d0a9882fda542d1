"""A certificate authority of the test's own and a server certificate it issued, as the local
run makes them for its git host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlopsctl.localrun import certificates


@dataclass(frozen=True)
class Pki:
    authority: certificates.Authority
    server: certificates.ServerCertificate
    bundle: Path


def make_pki(directory: Path, names: list[str]) -> Pki:
    """A CA, a certificate for `names` and 127.0.0.1, and the CA joined to the system roots."""
    authority = certificates.create_authority(directory, "mlopsctl test run")
    server = certificates.issue(authority, directory, names, ["127.0.0.1"])
    bundle = certificates.bundle_with_system_roots(authority, directory / "bundle.crt")
    return Pki(authority, server, bundle)
