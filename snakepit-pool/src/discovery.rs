//! External workers found through DNS: an address `dns:<name>:<port>` in
//! `external_workers` stands for every address the name resolves to. The
//! pool gives each address a worker slot, resolves the name again every
//! `discovery_interval`, adds slots for new addresses
//! (`snakepit.pool.worker.discovered`) and drains the slots of addresses
//! that disappeared (`snakepit.pool.worker.removed`: no new calls, the calls
//! in flight finish, the connection closes).
//!
//! Resolution goes through a [`Resolver`]: [`SystemResolver`] (the
//! system's, `getaddrinfo`) unless the config names another, such as a
//! test's resolver whose answers change.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::ExternalWorker;
use crate::supervisor::{register, run_slot, Shared};

/// The prefix of a discovered address in `external_workers`.
pub const DNS_PREFIX: &str = "dns:";

/// Resolves a host name to the addresses of its workers.
#[async_trait::async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// The socket addresses `host` stands for now, each with `port` (a
    /// resolver may return other ports, e.g. from SRV records). An error
    /// keeps the pool's current workers until the next attempt.
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>>;
}

/// The system's resolver (`getaddrinfo`, through Tokio).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

#[async_trait::async_trait]
impl Resolver for SystemResolver {
    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        Ok(tokio::net::lookup_host((host, port)).await?.collect())
    }
}

/// The resolver a pool uses: [`SystemResolver`] by default. Compares equal
/// to another handle of the same resolver.
#[derive(Clone)]
pub struct ResolverHandle(pub Arc<dyn Resolver>);

impl Default for ResolverHandle {
    fn default() -> Self {
        ResolverHandle(Arc::new(SystemResolver))
    }
}

impl fmt::Debug for ResolverHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResolverHandle")
    }
}

impl PartialEq for ResolverHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A `dns:<name>:<port>` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsName {
    /// The host name to resolve.
    pub host: String,
    /// The port of every address.
    pub port: u16,
}

impl DnsName {
    /// Parses `dns:<name>:<port>`; `None` for an address without the
    /// `dns:` prefix, an error naming what is wrong otherwise.
    pub fn parse(address: &str) -> Option<Result<DnsName, String>> {
        let rest = address.strip_prefix(DNS_PREFIX)?;
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Some(Err(format!(
                "{address:?} has no port: write `dns:<name>:<port>`"
            )));
        };
        if host.is_empty() || host.contains(['/', ' ']) {
            return Some(Err(format!(
                "{address:?}: `{host}` is not a host name: write `dns:<name>:<port>`"
            )));
        }
        Some(match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(DnsName {
                host: host.to_string(),
                port,
            }),
            _ => Err(format!("{address:?}: `{port}` is not a port (1 to 65535)")),
        })
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{DNS_PREFIX}{}:{}", self.host, self.port)
    }
}

/// A discovered worker's slot.
pub(crate) struct Member {
    pub slot: usize,
    /// Stops the slot (its address went away, or the pool stops).
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<()>,
}

/// One `dns:` source of a pool: its name, token, TLS and live members.
pub(crate) struct Source {
    pub name: DnsName,
    pub token: Option<String>,
    pub tls: Option<crate::config::WorkerTls>,
    pub members: BTreeMap<SocketAddr, Member>,
}

impl Source {
    /// The sources among `external_workers` (validated already).
    pub fn all(external: &[ExternalWorker]) -> Vec<Source> {
        external
            .iter()
            .filter_map(|w| {
                let name = DnsName::parse(&w.address)?.ok()?;
                Some(Source {
                    name,
                    token: w.token.clone(),
                    tls: w.tls.clone(),
                    members: BTreeMap::new(),
                })
            })
            .collect()
    }

    /// The name's addresses now, sorted and without duplicates.
    pub async fn resolve(&self, shared: &Shared) -> Result<BTreeSet<SocketAddr>, String> {
        let resolver = &shared.config.resolver.0;
        resolver
            .resolve(&self.name.host, self.name.port)
            .await
            .map(|a| a.into_iter().collect())
            .map_err(|e| format!("cannot resolve {}: {e}", self.name))
    }

    /// Gives `address` a slot and starts its worker. A worker that cannot
    /// be reached gets no slot (`spawn_failed` says why); the next
    /// resolution tries it again.
    pub async fn add(&mut self, shared: &Arc<Shared>, address: SocketAddr, resolved: usize) {
        let slot = shared.dispatch.add_slot();
        shared.set_external(
            slot,
            ExternalWorker {
                address: address.to_string(),
                token: self.token.clone(),
                // The certificate names the service, not each address.
                tls: self.tls.clone().map(|mut tls| {
                    tls.server_name
                        .get_or_insert_with(|| self.name.host.clone());
                    tls
                }),
            },
        );
        match shared.start(slot).await {
            Ok(started) => {
                let worker_id = shared.worker_id(slot);
                shared.events.discovery(
                    false,
                    &worker_id,
                    &address.to_string(),
                    &self.name.to_string(),
                    resolved,
                );
                let serving = register(shared, slot, started);
                let (stop, stop_rx) = watch::channel(false);
                let task = tokio::spawn(run_slot(shared.clone(), slot, serving, stop_rx));
                self.members.insert(address, Member { slot, stop, task });
            }
            Err(_) => shared.dispatch.retire(slot),
        }
    }

    /// Drains and closes the worker of `address`.
    pub async fn remove(&mut self, shared: &Shared, address: SocketAddr, resolved: usize) {
        let Some(member) = self.members.remove(&address) else {
            return;
        };
        shared.events.discovery(
            true,
            &shared.worker_id(member.slot),
            &address.to_string(),
            &self.name.to_string(),
            resolved,
        );
        shared.mark_removed(member.slot);
        let _ = member.stop.send(true);
        let _ = member.task.await;
        shared.dispatch.retire(member.slot);
    }

    /// Brings the members in line with `now`.
    pub async fn apply(&mut self, shared: &Arc<Shared>, now: &BTreeSet<SocketAddr>) {
        let gone: Vec<SocketAddr> = self
            .members
            .keys()
            .filter(|a| !now.contains(a))
            .copied()
            .collect();
        for address in gone {
            self.remove(shared, address, now.len()).await;
        }
        for &address in now {
            if !self.members.contains_key(&address) {
                self.add(shared, address, now.len()).await;
            }
        }
    }

    /// Stops every member (the pool stops) and waits for them.
    pub async fn stop_all(&mut self) {
        for member in self.members.values() {
            let _ = member.stop.send(true);
        }
        for (_, member) in std::mem::take(&mut self.members) {
            let _ = member.task.await;
        }
    }
}

/// Re-resolves every source each `discovery_interval` until the pool
/// stops, then stops their workers.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut sources: Vec<Source>,
    mut stop: watch::Receiver<bool>,
) {
    let period = shared
        .config
        .discovery_interval
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {}
        }
        for source in &mut sources {
            match source.resolve(&shared).await {
                Ok(now) => {
                    // A name that resolves to nothing keeps its workers: an
                    // empty answer is more often a DNS hiccup than an empty
                    // service; they are drained when other addresses replace
                    // them.
                    if !now.is_empty() {
                        source.apply(&shared, &now).await;
                    }
                }
                Err(e) => tracing::warn!(
                    target: "snakepit::pool",
                    pool_name = %shared.config.pool_name,
                    "{e}; keeping the current workers"
                ),
            }
        }
    }
    for source in &mut sources {
        source.stop_all().await;
    }
}
