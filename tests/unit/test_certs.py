"""``edgesched certs``: the CA and certificates really make a mutually authenticated TLS link."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgesched.certs import CertSet, add_agents, init_certs
from edgesched.cli.certs import certs_command
from edgesched.errors import ConfigError

HANDSHAKE_TIMEOUT_S = 5.0


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(value, str)
    return value


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def certs(tmp_path: Path) -> CertSet:
    return init_certs(tmp_path / "certs", agents=2, master_names=["10.1.2.3", "master.example"])


@pytest.fixture
def other(tmp_path: Path) -> CertSet:
    """A second, unrelated cluster: nothing of it may be trusted by the first."""
    return init_certs(tmp_path / "other", agents=1)


# ---- a real TLS handshake on loopback ------------------------------------------------------


@dataclass
class Outcome:
    server_peer_cn: str | None = None
    server_error: BaseException | None = None
    client_reply: bytes | None = None
    client_error: BaseException | None = None


def handshake(
    server_cert: Path,
    server_key: Path,
    server_ca: Path,
    client_cert: Path,
    client_key: Path,
    client_ca: Path,
    server_hostname: str = "localhost",
    check_hostname: bool = True,
) -> Outcome:
    """One TLS connection: a server that requires a client certificate, a client in a thread.

    The server answers b"ok" after a good handshake; with TLS 1.3 the client learns that its
    certificate was refused only when it reads, so the client always reads once.
    """
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_cert, server_key)
    server_ctx.load_verify_locations(cafile=server_ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cafile=client_ca)
    client_ctx.load_cert_chain(client_cert, client_key)
    client_ctx.check_hostname = check_hostname

    outcome = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(HANDSHAKE_TIMEOUT_S)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(HANDSHAKE_TIMEOUT_S)
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert(binary_form=True)
                assert peer is not None
                outcome.server_peer_cn = common_name(x509.load_der_x509_certificate(peer))
                tls.sendall(b"ok")
        except (OSError, AssertionError) as exc:  # ssl.SSLError is an OSError
            outcome.server_error = exc

    def dial() -> None:
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT_S)
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                outcome.client_reply = tls.recv(2)
        except OSError as exc:
            outcome.client_error = exc

    threads = [threading.Thread(target=serve), threading.Thread(target=dial)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(3 * HANDSHAKE_TIMEOUT_S)
            assert not thread.is_alive(), "the handshake hung"
    finally:
        listener.close()
    return outcome


def test_agent_and_master_complete_a_mutual_tls_handshake(certs: CertSet) -> None:
    agent = certs.agents[0]
    outcome = handshake(
        certs.master_cert, certs.master_key, certs.ca_cert, agent.cert, agent.key, certs.ca_cert
    )
    assert outcome.server_error is None
    assert outcome.client_error is None
    assert outcome.client_reply == b"ok"
    assert outcome.server_peer_cn == "agent-1"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.1.2.3", "master.example"])
def test_hostname_check_passes_for_every_master_name(certs: CertSet, host: str) -> None:
    agent = certs.agents[1]
    outcome = handshake(
        certs.master_cert,
        certs.master_key,
        certs.ca_cert,
        agent.cert,
        agent.key,
        certs.ca_cert,
        server_hostname=host,
    )
    assert outcome.client_error is None, outcome.client_error
    assert outcome.server_peer_cn == "agent-2"


def test_hostname_check_fails_for_a_name_not_in_the_certificate(certs: CertSet) -> None:
    agent = certs.agents[0]
    outcome = handshake(
        certs.master_cert,
        certs.master_key,
        certs.ca_cert,
        agent.cert,
        agent.key,
        certs.ca_cert,
        server_hostname="elsewhere.example",
    )
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert outcome.client_reply is None


def test_master_refuses_an_agent_certificate_from_another_ca(
    certs: CertSet, other: CertSet
) -> None:
    stranger = other.agents[0]
    # the stranger even trusts our CA: only the master's check can keep it out
    outcome = handshake(
        certs.master_cert,
        certs.master_key,
        certs.ca_cert,
        stranger.cert,
        stranger.key,
        certs.ca_cert,
    )
    assert isinstance(outcome.server_error, ssl.SSLCertVerificationError)
    assert outcome.server_peer_cn is None
    assert outcome.client_reply in (None, b"")  # refused by an alert, or the link just closed


def test_agent_refuses_a_master_certificate_from_another_ca(certs: CertSet, other: CertSet) -> None:
    agent = certs.agents[0]
    outcome = handshake(
        other.master_cert, other.master_key, certs.ca_cert, agent.cert, agent.key, certs.ca_cert
    )
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert outcome.client_reply is None


def test_an_agent_certificate_cannot_pose_as_the_master(certs: CertSet) -> None:
    # client-auth only: a stolen agent key must not let a board impersonate the master, even
    # to a client that skips the hostname check
    impostor, agent = certs.agents
    outcome = handshake(
        impostor.cert,
        impostor.key,
        certs.ca_cert,
        agent.cert,
        agent.key,
        certs.ca_cert,
        check_hostname=False,
    )
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert "purpose" in str(outcome.client_error)


# ---- the certificates themselves -----------------------------------------------------------


def test_files_exist_and_keys_are_private(certs: CertSet) -> None:
    keys = [certs.ca_key, certs.master_key, *(a.key for a in certs.agents)]
    crts = [certs.ca_cert, certs.master_cert, *(a.cert for a in certs.agents)]
    for key in keys:
        assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        assert mode(key) == 0o600, key
    for crt in crts:
        assert crt.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert mode(crt) == 0o644, crt
    assert sorted(certs.written) == sorted(keys + crts)
    assert sorted(p.name for p in certs.directory.iterdir()) == sorted(
        p.name for p in keys + crts
    ), "no temporary files may be left behind"
    assert [a.name for a in certs.agents] == ["agent-1", "agent-2"]
    assert mode(certs.directory) == 0o700


def test_ca_is_a_leaf_only_signing_ca(certs: CertSet) -> None:
    ca = load(certs.ca_cert)
    assert common_name(ca).startswith("edgesched CA ")
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    assert constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_each_cluster_gets_its_own_ca_name(certs: CertSet, other: CertSet) -> None:
    assert common_name(load(certs.ca_cert)) != common_name(load(other.ca_cert))


def test_leaves_are_signed_by_the_ca_with_the_right_usages(certs: CertSet, other: CertSet) -> None:
    ca = load(certs.ca_cert)
    master = load(certs.master_cert)
    master.verify_directly_issued_by(ca)
    assert common_name(master) == "edgesched master"
    eku = master.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert master.not_valid_after_utc <= ca.not_valid_after_utc

    for agent in certs.agents:
        leaf = load(agent.cert)
        leaf.verify_directly_issued_by(ca)
        assert common_name(leaf) == agent.name
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False

    # the same subject name layout must not make another cluster's CA acceptable
    with pytest.raises((ValueError, TypeError)):
        master.verify_directly_issued_by(load(other.ca_cert))


def test_master_san_holds_loopback_and_the_extra_names(certs: CertSet) -> None:
    san = load(certs.master_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = san.value.get_values_for_type(x509.DNSName)
    ips = san.value.get_values_for_type(x509.IPAddress)
    assert dns == ["localhost", "master.example"]
    assert ips == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]


def test_master_names_are_cleaned_and_deduplicated(tmp_path: Path) -> None:
    made = init_certs(
        tmp_path,
        agents=0,
        master_names=["[fe80::1]", " Board.LAN ", "127.0.0.1", "0:0:0:0:0:0:0:1", "bücher.example"],
    )
    san = load(made.master_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == [
        "localhost",
        "board.lan",
        "xn--bcher-kva.example",
    ]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert made.agents == []


@pytest.mark.parametrize("name", ["", "   ", "two words", "a..b", "-lead.example", "x/y"])
def test_bad_master_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        init_certs(tmp_path / "d", agents=1, master_names=[name])
    assert not (tmp_path / "d").exists(), "nothing may be written when the input is wrong"


def test_bad_counts_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        init_certs(tmp_path, agents=-1)
    with pytest.raises(ConfigError):
        init_certs(tmp_path, agents=1, days=0)


def test_days_bound_the_leaf_lifetime(tmp_path: Path) -> None:
    made = init_certs(tmp_path, agents=1, days=30)
    leaf = load(made.agents[0].cert)
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 30 <= lifetime.days <= 31  # plus the backdating for boards with lagging clocks


# ---- an existing CA -------------------------------------------------------------------------


def test_refuses_to_overwrite_an_existing_ca(certs: CertSet) -> None:
    before = {p.name: p.read_bytes() for p in certs.directory.iterdir()}
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        init_certs(certs.directory, agents=1)
    assert {p.name: p.read_bytes() for p in certs.directory.iterdir()} == before


def test_a_lone_ca_key_also_counts_as_an_existing_ca(tmp_path: Path) -> None:
    made = init_certs(tmp_path, agents=0)
    made.ca_cert.unlink()
    with pytest.raises(ConfigError):
        init_certs(tmp_path, agents=0)


def test_force_replaces_the_ca_and_drops_stale_agents(certs: CertSet) -> None:
    old_ca = load(certs.ca_cert)
    fresh = init_certs(certs.directory, agents=1, force=True)
    new_ca = load(fresh.ca_cert)
    assert new_ca.public_key() != old_ca.public_key()
    load(fresh.master_cert).verify_directly_issued_by(new_ca)
    load(fresh.agents[0].cert).verify_directly_issued_by(new_ca)
    # agent-2 chained to the old CA: it would only fail later, on a board
    assert not (certs.directory / "agent-2.crt").exists()
    assert not (certs.directory / "agent-2.key").exists()


def test_add_agents_continues_the_numbering_with_the_same_ca(certs: CertSet) -> None:
    first = certs.agents[0].cert.read_bytes()
    more = add_agents(certs.directory, 2)
    assert [a.name for a in more.agents] == ["agent-3", "agent-4"]
    assert sorted(more.written) == sorted([p for a in more.agents for p in (a.cert, a.key)]), (
        "add_agents writes only the new agents' files"
    )
    assert certs.agents[0].cert.read_bytes() == first
    ca = load(certs.ca_cert)
    for agent in more.agents:
        load(agent.cert).verify_directly_issued_by(ca)
        assert mode(agent.key) == 0o600
    outcome = handshake(
        certs.master_cert,
        certs.master_key,
        certs.ca_cert,
        more.agents[1].cert,
        more.agents[1].key,
        certs.ca_cert,
    )
    assert outcome.server_peer_cn == "agent-4"


def test_add_agents_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="certs init"):
        add_agents(tmp_path, 1)


def test_add_agents_refuses_a_key_of_another_ca(certs: CertSet, other: CertSet) -> None:
    certs.ca_key.write_bytes(other.ca_key.read_bytes())
    with pytest.raises(ConfigError, match="does not belong"):
        add_agents(certs.directory, 1)


# ---- the command ---------------------------------------------------------------------------


def test_cli_init_writes_files_and_prints_the_next_commands(tmp_path: Path) -> None:
    target = tmp_path / "tls"
    runner = CliRunner()
    result = runner.invoke(
        certs_command, ["init", str(target), "--agents", "3", "--name", "192.168.1.10"]
    )
    assert result.exit_code == 0, result.output
    for name in ["ca.crt", "ca.key", "master.crt", "master.key", "agent-3.crt", "agent-3.key"]:
        assert (target / name).is_file()
        assert str(target / name) in result.output
    assert mode(target / "agent-3.key") == 0o600
    assert (
        f"edgesched master --tls-cert {target}/master.crt --tls-key {target}/master.key "
        f"--tls-ca {target}/ca.crt" in result.output
    )
    assert (
        f"edgesched agent --master-ip 192.168.1.10 --tls-cert {target}/agent-1.crt "
        f"--tls-key {target}/agent-1.key --tls-ca {target}/ca.crt" in result.output
    )

    again = runner.invoke(certs_command, ["init", str(target), "--agents", "1"])
    assert again.exit_code == 1
    assert "refusing to overwrite" in again.output
    assert "--force" in again.output

    forced = runner.invoke(certs_command, ["init", str(target), "--agents", "1", "--force"])
    assert forced.exit_code == 0, forced.output
    assert not (target / "agent-3.crt").exists()

    added = runner.invoke(certs_command, ["add-agents", str(target), "--agents", "2"])
    assert added.exit_code == 0, added.output
    assert str(target / "agent-3.crt") in added.output
    assert (target / "agent-3.key").is_file()


def test_cli_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        certs_command, ["init", str(tmp_path / "x"), "--name", "not a host"]
    )
    assert result.exit_code == 1
    assert "neither an IP address nor a host name" in result.output
    assert not isinstance(result.exception, ConfigError)  # turned into a ClickException


def test_importing_the_module_does_not_load_cryptography() -> None:
    # `edgesched certs --help` imports the command and edgesched.certs: no cryptography for it
    code = "import sys, edgesched.cli.certs; assert 'cryptography' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
