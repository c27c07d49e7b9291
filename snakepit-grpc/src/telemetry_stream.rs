//! The telemetry stream task: opens `TelemetryStream`, pushes the current
//! policy first and then every change (policy or log level), folds the
//! batches, and reopens the stream with backoff when it breaks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use snakepit_core::Policy;
use snakepit_telemetry::{LogLevels, PolicyWatch, Telemetry};
use tokio::sync::{mpsc, watch};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Streaming;

use crate::batch::{BatchCodec, RawBatch};
use crate::channel::{Raw, RecvStream, MAX_MESSAGE_BYTES};
use crate::error::{from_status, CallError};
use crate::fold::{Folder, StatCounters};
use crate::link::Link;
use crate::proto::{self, telemetry_control};

/// First and longest wait between reopen attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The full policy message for one worker.
pub(crate) fn policy_control(
    policy: &Policy,
    levels: &LogLevels,
    worker_id: &str,
) -> proto::TelemetryControl {
    proto::TelemetryControl {
        control: Some(telemetry_control::Control::Policy(proto::TelemetryPolicy {
            enabled: policy.enabled,
            sampling_rate: policy.sampling_rate,
            pattern_rates: policy
                .pattern_rates
                .iter()
                .map(|p| proto::PatternRate {
                    pattern: p.pattern.as_str().to_string(),
                    rate: p.rate,
                })
                .collect(),
            allow: policy
                .allow
                .iter()
                .map(|p| p.as_str().to_string())
                .collect(),
            deny: policy.deny.iter().map(|p| p.as_str().to_string()).collect(),
            log_level: levels.worker_level(worker_id).as_str().to_string(),
            version: policy.version,
        })),
    }
}

/// The policy version a control message carries.
fn policy_version(control: &proto::TelemetryControl) -> Option<u64> {
    match &control.control {
        Some(telemetry_control::Control::Policy(p)) => Some(p.version),
        _ => None,
    }
}

/// An open telemetry stream: the control sender and the batch receiver.
pub(crate) struct OpenStream {
    controls: mpsc::Sender<proto::TelemetryControl>,
    batches: Streaming<RawBatch>,
}

pub(crate) struct TelemetryTask {
    /// The channel (the stream uses its own codec, see `batch`).
    pub(crate) raw: Raw,
    pub(crate) link: Arc<Link>,
    pub(crate) stats: Arc<StatCounters>,
    pub(crate) folder: Folder,
    pub(crate) policy_rx: PolicyWatch,
    pub(crate) log_rx: watch::Receiver<Arc<LogLevels>>,
    /// Fires when any worker's own policy changes (ours may be among them).
    pub(crate) workers_rx: watch::Receiver<u64>,
    pub(crate) telemetry: Telemetry,
    /// The policy version of the last control message made.
    pub(crate) sent_version: Option<u64>,
    pub(crate) open_timeout: Duration,
}

impl TelemetryTask {
    /// The control message of this worker's policy now (its own, when it
    /// has one, else the pool-wide one) and log level.
    fn current_policy(&mut self) -> proto::TelemetryControl {
        self.policy_rx.borrow_and_update();
        self.workers_rx.borrow_and_update();
        let policy = self.telemetry.policy_for_worker(&self.link.worker_id);
        let levels = self.log_rx.borrow_and_update().clone();
        let control = policy_control(&policy, &levels, &self.link.worker_id);
        self.sent_version = policy_version(&control);
        control
    }

    /// Opens the stream with the current policy as its first message.
    pub(crate) async fn open(&mut self) -> Result<OpenStream, CallError> {
        let (controls, rx) = mpsc::channel(64);
        let first = self.current_policy();
        // The channel is empty: this cannot fail.
        let _ = controls.try_send(first);
        let mut grpc = tonic::client::Grpc::new(self.raw.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let opening = async move {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("channel not ready: {e}")))?;
            grpc.streaming(
                tonic::Request::new(RecvStream(rx)),
                PathAndQuery::from_static("/snakepit.bridge.BridgeService/TelemetryStream"),
                BatchCodec,
            )
            .await
        };
        let response = tokio::time::timeout(self.open_timeout, opening)
            .await
            .map_err(|_| {
                CallError::unavailable(format!(
                    "opening the telemetry stream timed out after {:?}",
                    self.open_timeout
                ))
            })?
            .map_err(|s| from_status(&s, None))?;
        Ok(OpenStream {
            controls,
            batches: response.into_inner(),
        })
    }

    /// Runs until `close` fires.
    pub(crate) async fn run(mut self, first: OpenStream, mut close: watch::Receiver<bool>) {
        let mut stream = Some(first);
        loop {
            let Some(open) = stream.take() else {
                match self.reopen(&mut close).await {
                    Some(open) => stream = Some(open),
                    None => return,
                }
                continue;
            };
            let reason = tokio::select! {
                _ = close.changed() => return,
                reason = self.serve(open) => reason,
            };
            if self.link.is_closed() {
                return;
            }
            self.link.lost(&reason);
        }
    }

    /// Folds batches and pushes policy changes until the stream breaks;
    /// returns why it broke.
    async fn serve(&mut self, open: OpenStream) -> String {
        let OpenStream {
            controls,
            mut batches,
        } = open;
        let mut watch_policy = true;
        let mut watch_log = true;
        let mut watch_workers = true;
        loop {
            tokio::select! {
                message = batches.message() => match message {
                    Ok(Some(batch)) => self.folder.fold(&batch),
                    Ok(None) => {
                        self.folder.stream_ended();
                        return "the worker ended the telemetry stream".to_string();
                    }
                    Err(status) => return from_status(&status, None).to_string(),
                },
                changed = self.policy_rx.changed(), if watch_policy => {
                    if changed.is_err() {
                        watch_policy = false;
                        continue;
                    }
                    let control = self.current_policy();
                    if controls.send(control).await.is_err() {
                        return "the telemetry control stream closed".to_string();
                    }
                }
                changed = self.workers_rx.changed(), if watch_workers => {
                    if changed.is_err() {
                        watch_workers = false;
                        continue;
                    }
                    // Another worker's change leaves ours as it was.
                    let before = self.sent_version;
                    let control = self.current_policy();
                    if policy_version(&control) == before {
                        continue;
                    }
                    if controls.send(control).await.is_err() {
                        return "the telemetry control stream closed".to_string();
                    }
                }
                changed = self.log_rx.changed(), if watch_log => {
                    if changed.is_err() {
                        watch_log = false;
                        continue;
                    }
                    let control = self.current_policy();
                    if controls.send(control).await.is_err() {
                        return "the telemetry control stream closed".to_string();
                    }
                }
            }
        }
    }

    /// Reopens with exponential backoff; `None` when closed meanwhile.
    async fn reopen(&mut self, close: &mut watch::Receiver<bool>) -> Option<OpenStream> {
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u64;
        loop {
            tokio::select! {
                _ = close.changed() => return None,
                _ = tokio::time::sleep(backoff) => {}
            }
            if self.link.is_closed() {
                return None;
            }
            attempts += 1;
            let opened = tokio::select! {
                _ = close.changed() => return None,
                opened = self.open() => opened,
            };
            match opened {
                Ok(open) => {
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    self.link.restored(attempts);
                    return Some(open);
                }
                Err(e) => {
                    tracing::debug!(
                        target: "snakepit::grpc",
                        worker_id = &*self.link.worker_id,
                        attempts,
                        error = %e,
                        "reopening the telemetry stream failed"
                    );
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}
