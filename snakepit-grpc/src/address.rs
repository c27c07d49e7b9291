//! Where a worker listens: a Unix socket path or a TCP address.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// The address of one worker's gRPC server.
///
/// Parsed from the worker's `--listen` spelling: `unix:/path/to.sock` or
/// `host:port` (`127.0.0.1:50051`, `[::1]:50051`, `localhost:50051`).
///
/// ```
/// use snakepit_grpc::WorkerAddress;
/// let a: WorkerAddress = "unix:/run/w1.sock".parse().unwrap();
/// assert_eq!(a.to_string(), "unix:/run/w1.sock");
/// let t: WorkerAddress = "127.0.0.1:50051".parse().unwrap();
/// assert_eq!(t.to_string(), "127.0.0.1:50051");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WorkerAddress {
    /// A Unix domain socket (the default for local workers).
    Unix(PathBuf),
    /// A TCP address (external workers).
    Tcp(SocketAddr),
}

/// A worker address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid worker address {input:?}: {reason} (expected unix:/path or host:port)")]
pub struct AddressError {
    /// The text given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for WorkerAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| AddressError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            // Accept unix:///abs/path too.
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(err("empty socket path"));
            }
            return Ok(WorkerAddress::Unix(PathBuf::from(path)));
        }
        if s.is_empty() {
            return Err(err("empty address"));
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(WorkerAddress::Tcp(addr));
        }
        if !s.contains(':') {
            return Err(err("missing port"));
        }
        let mut addrs = s
            .to_socket_addrs()
            .map_err(|e| err(&format!("cannot resolve: {e}")))?;
        addrs
            .next()
            .map(WorkerAddress::Tcp)
            .ok_or_else(|| err("host resolves to no address"))
    }
}

impl fmt::Display for WorkerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            WorkerAddress::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds_and_rejects_bad_input() {
        assert_eq!(
            "unix:/tmp/x.sock".parse::<WorkerAddress>().unwrap(),
            WorkerAddress::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            "unix:///tmp/x.sock".parse::<WorkerAddress>().unwrap(),
            WorkerAddress::Unix("/tmp/x.sock".into())
        );
        assert!(matches!(
            "[::1]:9".parse::<WorkerAddress>().unwrap(),
            WorkerAddress::Tcp(_)
        ));
        let e = "nonsense".parse::<WorkerAddress>().unwrap_err();
        assert!(e.to_string().contains("nonsense"), "{e}");
        assert!("unix:".parse::<WorkerAddress>().is_err());
    }
}
