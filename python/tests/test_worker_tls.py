"""The worker's TLS options: each bad setting stops it before it listens,
with SNAKEPIT_LISTEN_ERROR naming the option and the file. (TLS that works
is tested from the host, with real certificates:
snakepit-pool/tests/tls_workers.rs.)"""

import pytest

from snakepit_bridge.worker.tls import TlsConfigError, server_credentials


def test_no_tls_option_means_plain():
    assert server_credentials("127.0.0.1:0", None, None, None) is None


@pytest.mark.parametrize("cert,key,missing", [("c.pem", None, "--tls-key"),
                                              (None, "k.pem", "--tls-cert")])
def test_half_a_pair_is_refused(cert, key, missing):
    with pytest.raises(TlsConfigError, match=f"{missing} is missing"):
        server_credentials("127.0.0.1:0", cert, key, None)


def test_tls_on_a_unix_socket_is_refused():
    with pytest.raises(TlsConfigError, match="TLS is for TCP"):
        server_credentials("unix:/tmp/w.sock", "c.pem", "k.pem", None)


def test_missing_and_non_pem_files_are_named(tmp_path):
    cert = tmp_path / "w.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsConfigError, match=r"--tls-key .*nope\.key: cannot read it"):
        server_credentials("127.0.0.1:0", str(cert), str(tmp_path / "nope.key"), None)
    key = tmp_path / "w.key"
    key.write_text("not a key")
    with pytest.raises(TlsConfigError, match=r"--tls-key .*w\.key: holds no PEM private key"):
        server_credentials("127.0.0.1:0", str(cert), str(key), None)
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(TlsConfigError, match=r"--tls-client-ca .*w\.key: holds no PEM CA"):
        server_credentials("127.0.0.1:0", str(cert), str(key), str(key))


def test_the_worker_stops_with_a_listen_error(start_worker, tmp_path):
    w = start_worker("--tls-cert", str(tmp_path / "missing.pem"), "--tls-key",
                     str(tmp_path / "missing.key"), listen="127.0.0.1:0", expect_ready=False)
    assert w.wait(timeout=20) == 1
    err = w.stderr()
    assert "SNAKEPIT_LISTEN_ERROR: --tls-cert" in err
    assert "missing.pem: cannot read it" in err


def test_tls_does_not_replace_the_token_on_a_network_address(start_worker, tmp_path):
    w = start_worker("--tls-cert", str(tmp_path / "w.pem"), "--tls-key",
                     str(tmp_path / "w.key"), listen="0.0.0.0:0", expect_ready=False)
    assert w.wait(timeout=20) == 1
    assert "SNAKEPIT_LISTEN_ERROR: refusing to listen on" in w.stderr()
