"""A small private CA and the certificates a secure cluster needs (``edgesched certs``'s
command is ``edgesched.cli.certs``).

``init_certs`` (``edgesched certs init DIR --agents N``) writes, all PEM::

    ca.crt, ca.key                 the cluster's own CA (ECDSA P-256, may sign leaves only)
    master.crt, master.key         server (and client) certificate for the master
    agent-1.crt … agent-N.crt      client certificates, CN ``agent-<i>``, with their .key files

Private keys are written with mode 0600 and every file atomically (temporary file, fsync,
rename), so a crash never leaves a half-written key that a later start would choke on.

An existing CA is never replaced unless asked (``force=True`` / ``--force``): replacing it
silently would invalidate every certificate already handed to the boards. More agents for an
existing CA come from :func:`add_agents` (``edgesched certs add-agents DIR --agents N``), which
reuses ``ca.key`` and numbers the new agents after the highest ``agent-<i>`` already there.

Module-level imports stay light (stdlib): the CLI imports this module for `edgesched certs`
only, and ``cryptography`` is only needed by the functions that make certificates.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgesched.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
MASTER_CERT = "master.crt"
MASTER_KEY = "master.key"
#: always in the master's SubjectAlternativeName: a cluster on one machine works out of the box
DEFAULT_MASTER_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 825
#: the CA outlives the leaves it signs, so ``add_agents`` a year later still has room; leaves
#: are never valid past their CA (they would fail verification from that day on anyway)
CA_MIN_DAYS = 3650
#: edge boards without a battery-backed clock boot with a time that lags until NTP catches up:
#: backdating "not before" keeps a freshly issued certificate from being "not yet valid" there
BACKDATE = dt.timedelta(hours=1)
_AGENT_FILE = re.compile(r"^agent-(\d+)\.(crt|key)$")
#: a DNS name as TLS clients match it: dot-separated labels, an optional leading wildcard
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST = re.compile(rf"^(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}$")


@dataclass(frozen=True)
class AgentCert:
    """One agent's certificate and key, by its number ``i`` (CN ``agent-<i>``)."""

    index: int
    cert: Path
    key: Path

    @property
    def name(self) -> str:
        return f"agent-{self.index}"


@dataclass(frozen=True)
class CertSet:
    """Where the files of one certificate directory are.

    ``agents`` lists the agents this call issued (for :func:`add_agents`, only the new ones);
    ``written`` every file this call wrote, in the order written.
    """

    directory: Path
    ca_cert: Path
    ca_key: Path
    master_cert: Path
    master_key: Path
    agents: list[AgentCert] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)


# ---- public API ---------------------------------------------------------------------------


def init_certs(
    directory: Path,
    agents: int,
    master_names: list[str] | None = None,
    days: int = DEFAULT_DAYS,
    *,
    force: bool = False,
) -> CertSet:
    """Creates a new CA, a master certificate and ``agents`` agent certificates in ``directory``.

    ``master_names`` are extra host names or IP addresses the master is reached by (added to
    localhost, 127.0.0.1 and ::1). Raises :class:`ConfigError` if a CA is already there and
    ``force`` is false; with ``force`` the old CA is replaced and ``agent-<i>`` files the new
    run does not rewrite are deleted, because they chain to a CA that no longer exists.
    """
    directory = Path(directory)
    _check_counts(agents, days)
    names = _master_names(master_names)
    ca_cert_path, ca_key_path = directory / CA_CERT, directory / CA_KEY
    if not force and (ca_cert_path.exists() or ca_key_path.exists()):
        raise ConfigError(
            f"{directory} already holds a CA ({CA_CERT} / {CA_KEY}); refusing to overwrite it: "
            "certificates it signed would stop working. Use --force to replace it, or "
            f"`edgesched certs add-agents {directory} --agents N` to add agents to it"
        )

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _make_ca(ca_key, now, max(days, CA_MIN_DAYS))
    master_key = ec.generate_private_key(ec.SECP256R1())
    master_cert = _make_leaf(
        ca_cert, ca_key, master_key, "edgesched master", now, days, server=True, names=names
    )
    # everything is generated before the first write: a failure above leaves the directory as
    # it was, and the writes below are the short part that can still be interrupted
    files: list[tuple[Path, bytes, bool]] = [
        (ca_key_path, _key_pem(ca_key), True),
        (ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), False),
        (directory / MASTER_KEY, _key_pem(master_key), True),
        (directory / MASTER_CERT, master_cert.public_bytes(serialization.Encoding.PEM), False),
    ]
    issued = _issue_agents(directory, ca_cert, ca_key, range(1, agents + 1), now, days, files)

    _make_dir(directory)
    if force:
        keep = {path for path, _, _ in files}
        for stale in _agent_files(directory):
            if stale not in keep:
                stale.unlink()
    written = _write_all(files)
    return CertSet(
        directory,
        ca_cert_path,
        ca_key_path,
        directory / MASTER_CERT,
        directory / MASTER_KEY,
        issued,
        written,
    )


def add_agents(directory: Path, agents: int, days: int = DEFAULT_DAYS) -> CertSet:
    """Issues ``agents`` more agent certificates from the CA already in ``directory``.

    The new agents are numbered after the highest ``agent-<i>`` file present, so existing
    agents keep their certificates. Raises :class:`ConfigError` when there is no usable CA.
    """
    directory = Path(directory)
    _check_counts(agents, days)
    ca_cert, ca_key = _load_ca(directory)
    indices = [int(m.group(1)) for p in _agent_files(directory) if (m := _AGENT_FILE.match(p.name))]
    first = max(indices, default=0) + 1
    files: list[tuple[Path, bytes, bool]] = []
    issued = _issue_agents(
        directory, ca_cert, ca_key, range(first, first + agents), _now(), days, files
    )
    written = _write_all(files)
    return CertSet(
        directory,
        directory / CA_CERT,
        directory / CA_KEY,
        directory / MASTER_CERT,
        directory / MASTER_KEY,
        issued,
        written,
    )


# ---- certificates -------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_counts(agents: int, days: int) -> None:
    if agents < 0:
        raise ConfigError(f"--agents must be 0 or more, not {agents}")
    if days < 1:
        raise ConfigError(f"certificate lifetime must be at least 1 day, not {days}")


def _master_names(extra: list[str] | None) -> list[str]:
    """The defaults plus ``extra``, cleaned and without duplicates, order kept."""
    names: list[str] = []
    for raw in [*DEFAULT_MASTER_NAMES, *(extra or [])]:
        name = raw.strip()
        if name.startswith("[") and name.endswith("]"):
            name = name[1:-1]  # "[fe80::1]" as written in URLs
        if not name:
            raise ConfigError("an empty master name was given")
        try:
            name = str(ipaddress.ip_address(name))  # canonical form, so duplicates collapse
        except ValueError:
            name = _dns_name(name)
            if not _HOST.match(name):
                raise ConfigError(f"{raw!r} is neither an IP address nor a host name") from None
        if name not in names:
            names.append(name)
    return names


def _dns_name(name: str) -> str:
    """``name`` as a SAN DNSName holds it: ASCII, lower case; "" when it cannot be one."""
    try:
        # internationalised names go in as their A-label (xn--…), the only form TLS matches
        return name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return ""


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    from cryptography import x509

    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _make_ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    # a random suffix tells apart the CAs of different clusters (and of --force reruns) in
    # error messages and in `openssl x509 -text`
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"edgesched CA {secrets.token_hex(4)}")]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        # path_length=0: this CA signs leaves only, never another CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    now: dt.datetime,
    days: int,
    *,
    server: bool,
    names: list[str] | None = None,
) -> x509.Certificate:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    # the master also dials out (to agents' result receivers, later peers), so it may act as a
    # client too; agents only ever dial
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,  # ECDHE-ECDSA: the key signs the handshake
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    if names:
        # hostname checks use the SAN only (the CN is ignored by TLS clients)
        builder = builder.add_extension(_san(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _issue_agents(
    directory: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    indices: range,
    now: dt.datetime,
    days: int,
    files: list[tuple[Path, bytes, bool]],
) -> list[AgentCert]:
    """Makes the agents' keys and certificates; appends their files to ``files``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    issued: list[AgentCert] = []
    for i in indices:
        agent = AgentCert(i, directory / f"agent-{i}.crt", directory / f"agent-{i}.key")
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _make_leaf(ca_cert, ca_key, key, agent.name, now, days, server=False)
        files.append((agent.key, _key_pem(key), True))
        files.append((agent.cert, cert.public_bytes(serialization.Encoding.PEM), False))
        issued.append(agent)
    return issued


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    # unencrypted PKCS#8: what ssl, grpc and openssl all load without a passphrase prompt; the
    # file mode (0600) is what protects it
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no CA in {directory} ({exc.filename} is missing): run `edgesched certs init` first"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the CA in {directory}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path} is not an EC private key")
    # a ca.key from another run would sign certificates that ca.crt cannot verify
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{key_path} does not belong to {cert_path}")
    return cert, key


# ---- files --------------------------------------------------------------------------------


def _make_dir(directory: Path) -> None:
    # 0700 for a directory we create: it holds private keys; an existing one is left as it is
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _agent_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _AGENT_FILE.match(p.name))


def _write_all(files: list[tuple[Path, bytes, bool]]) -> list[Path]:
    written: list[Path] = []
    for path, data, secret in files:
        _make_dir(path.parent)
        _write_atomic(path, data, 0o600 if secret else 0o644)
        written.append(path)
    return written


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file 0600 and exclusively, so a key is never readable by others, not
    # even for a moment, and a stale temporary file from a crash cannot lend it its mode
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
