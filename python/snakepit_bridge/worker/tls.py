"""TLS for a worker on TCP: ``--tls-cert``/``--tls-key`` (the worker's
certificate and key, PEM) and ``--tls-client-ca`` (require a client
certificate signed by this CA: mTLS). The token is checked on top."""

from __future__ import annotations

CERT_FLAG = "--tls-cert"
KEY_FLAG = "--tls-key"
CLIENT_CA_FLAG = "--tls-client-ca"


class TlsConfigError(ValueError):
    """A TLS option that cannot be used; the message names the option and file."""


def _read_pem(flag: str, path: str, marker: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TlsConfigError(f"{flag} {path}: cannot read it: {e.strerror or e}") from e
    if b"-----BEGIN " not in data or marker.encode() not in data:
        raise TlsConfigError(f"{flag} {path}: holds no PEM {what} ({marker})")
    return data


def server_credentials(listen: str, cert, key, client_ca):
    """The ``grpc.ServerCredentials`` for the options, or None without TLS.

    Raises TlsConfigError for a missing half of the pair, a ``unix:``
    address, or a file that cannot be read or holds no PEM."""
    if not (cert or key or client_ca):
        return None
    if listen.startswith("unix:"):
        raise TlsConfigError(f"TLS is for TCP addresses; {listen!r} is a Unix socket, "
                             "reached only on this machine: drop the --tls-* options")
    if not cert or not key:
        missing = KEY_FLAG if cert else CERT_FLAG
        raise TlsConfigError(f"{missing} is missing: TLS needs both {CERT_FLAG} and "
                             f"{KEY_FLAG}")
    import grpc

    chain = _read_pem(CERT_FLAG, cert, "CERTIFICATE-----", "certificate")
    private = _read_pem(KEY_FLAG, key, "PRIVATE KEY-----", "private key")
    roots = (_read_pem(CLIENT_CA_FLAG, client_ca, "CERTIFICATE-----", "CA certificate")
             if client_ca else None)
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=roots,
                                       require_client_auth=roots is not None)
