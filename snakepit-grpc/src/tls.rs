//! TLS to a worker on TCP: the files that verify it (and identify us to
//! it, with mTLS), read and checked before connecting, and the plain words
//! for each way a handshake fails.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// How the host verifies a worker on TCP (and proves itself to it): PEM
/// files read at connect time, so a renewed certificate is picked up at
/// the next (re)connect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA (one or more certificates) that signed the
    /// worker's certificate; only it is trusted (no system roots).
    pub ca: PathBuf,
    /// PEM file of the host's client certificate (chain), for a worker
    /// that requires one (`--tls-client-ca`). Set with `key`.
    pub cert: Option<PathBuf>,
    /// PEM file of the private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// The name the worker's certificate must carry (a DNS name or an IP
    /// address). Default: the host of the worker's address.
    pub server_name: Option<String>,
}

/// Which TLS file is wrong, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFileError {
    /// The setting: `ca`, `cert`, `key` or `server_name`.
    pub field: &'static str,
    /// The file (empty for `server_name` and a missing pair).
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.as_os_str().is_empty() {
            write!(f, "tls.{}: {}", self.field, self.message)
        } else {
            write!(
                f,
                "tls.{} {}: {}",
                self.field,
                self.path.display(),
                self.message
            )
        }
    }
}

impl std::error::Error for TlsFileError {}

impl TlsOptions {
    /// TLS verified against the CA in `ca`.
    pub fn new(ca: impl Into<PathBuf>) -> Self {
        TlsOptions {
            ca: ca.into(),
            ..TlsOptions::default()
        }
    }

    /// These options with a client certificate and its key (mTLS).
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(cert.into());
        self.key = Some(key.into());
        self
    }

    /// These options expecting `name` in the worker's certificate.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Reads every file and checks it holds what it should (certificates,
    /// a private key), the pair `cert`/`key` complete and `server_name` a
    /// DNS name or an IP address. The error names the setting and file.
    pub fn check(&self) -> Result<(), TlsFileError> {
        self.load().map(|_| ())
    }

    /// The tonic TLS settings from the files (see [`TlsOptions::check`]).
    pub(crate) fn load(&self) -> Result<ClientTlsConfig, TlsFileError> {
        let ca = read_certificates("ca", &self.ca)?;
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            // The worker speaks gRPC only; do not insist on ALPN.
            .assume_http2(true);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let cert = read_certificates("cert", cert)?;
                let key = read_key(key)?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            (Some(_), None) => return Err(unpaired("key", "cert")),
            (None, Some(_)) => return Err(unpaired("cert", "key")),
        }
        if let Some(name) = &self.server_name {
            rustls_pki_types::ServerName::try_from(name.as_str()).map_err(|_| TlsFileError {
                field: "server_name",
                path: PathBuf::new(),
                message: format!("{name:?} is neither a DNS name nor an IP address"),
            })?;
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

fn unpaired(missing: &'static str, set: &str) -> TlsFileError {
    TlsFileError {
        field: missing,
        path: PathBuf::new(),
        message: format!(
            "missing: tls.{set} is set, and a client certificate needs both tls.cert and tls.key"
        ),
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError {
        field,
        path: path.to_path_buf(),
        message: format!("cannot read it: {e}"),
    })
}

/// The file's bytes, once they parse as at least one PEM certificate.
fn read_certificates(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let bytes = read(field, path)?;
    let bad = |message: String| TlsFileError {
        field,
        path: path.to_path_buf(),
        message,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| bad(format!("unreadable PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_string(),
        ));
    }
    Ok(bytes)
}

/// The file's bytes, once they parse as a PEM private key.
fn read_key(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsFileError {
        field: "key",
        path: path.to_path_buf(),
        message: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_string()
            }
            e => format!("unreadable PEM private key: {e}"),
        },
    })?;
    Ok(bytes)
}

/// What a connection failing during or right after the TLS handshake
/// (or its first RPC failing) means. With TLS 1.3 the worker checks the client certificate after the
/// client has finished its handshake, so a refusal shows up as the
/// connection closed under the first RPC, without the worker's reason.
pub(crate) fn explain_after_handshake(tls: &TlsOptions, chain: &str) -> Option<&'static str> {
    if let Some(why) = explain(chain) {
        return Some(why);
    }
    // hyper says "connection was not ready" when the connection closed
    // between the handshake and the first request.
    const CLOSED: &[&str] = &[
        "connection closed",
        "close_notify",
        "broken pipe",
        "connection reset",
        "connection was not ready",
    ];
    if !CLOSED.iter().any(|c| chain.contains(c)) {
        return None;
    }
    Some(if tls.cert.is_none() {
        "the worker closed the connection after the TLS handshake: it requires a client \
         certificate (mTLS): set tls.cert and tls.key"
    } else {
        "the worker closed the connection after the TLS handshake: it refused the client \
         certificate, most likely not signed by the CA the worker trusts (its \
         --tls-client-ca): check tls.cert and tls.key"
    })
}

/// What a failed TLS connection means, in the words of the settings, for
/// an error chain (rustls' and the transport's messages); `None` when it
/// is not a TLS failure.
pub(crate) fn explain(chain: &str) -> Option<&'static str> {
    const CAUSES: &[(&[&str], &str)] = &[
        (
            &["UnknownIssuer", "unknown issuer"],
            "unknown CA: the worker's certificate is not signed by the CA in tls.ca",
        ),
        (
            &["NotValidForName", "not valid for name"],
            "name mismatch: the worker's certificate does not carry the name connected to; \
             set tls.server_name to a name in it, or reissue it",
        ),
        (
            &["Expired", "certificate expired"],
            "expired certificate: the worker's certificate is past its end date; renew it",
        ),
        (
            &["NotValidYet", "not valid yet"],
            "certificate not valid yet: check the clocks of host and worker",
        ),
        (
            &["CertificateRequired", "certificate required"],
            "the worker requires a client certificate (mTLS): set tls.cert and tls.key",
        ),
        (
            &[
                "UnknownCA",
                "unknown ca",
                "BadCertificate",
                "bad certificate",
            ],
            "the worker refused the client certificate: tls.cert is not signed by the CA \
             the worker trusts (its --tls-client-ca)",
        ),
        (
            &[
                "InvalidContentType",
                "corrupt message",
                "invalid content type",
            ],
            "the worker does not speak TLS: start it with --tls-cert and --tls-key, or \
             remove tls from its entry",
        ),
    ];
    CAUSES
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| chain.contains(n)))
        .map(|(_, why)| *why)
}
