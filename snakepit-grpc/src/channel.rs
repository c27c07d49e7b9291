//! The tonic channel to one worker (Unix socket or TCP) and the token
//! interceptor.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use crate::address::WorkerAddress;
use crate::error::CallError;
use crate::options::ConnectOptions;
use crate::proto::bridge_service_client::BridgeServiceClient;

/// The generated client over the channel, with the token interceptor.
pub(crate) type Rpc = BridgeServiceClient<InterceptedService<Channel, TokenAuth>>;

/// Largest message accepted from a worker (a telemetry batch is bounded by
/// the worker at about 4 MB; tool results may be larger).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Adds `x-snakepit-token` to every RPC when a token is configured.
#[derive(Clone, Debug)]
pub(crate) struct TokenAuth {
    token: Option<MetadataValue<Ascii>>,
}

impl Interceptor for TokenAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.token {
            request.metadata_mut().insert("x-snakepit-token", t.clone());
        }
        Ok(request)
    }
}

/// Connects (eagerly, within `connect_timeout`) and returns the RPC client.
pub(crate) async fn connect(options: &ConnectOptions) -> Result<Rpc, CallError> {
    let token = match &options.token {
        Some(t) => Some(t.parse::<MetadataValue<Ascii>>().map_err(|_| {
            CallError::unavailable(
                "the worker token must be printable ASCII (it travels as gRPC metadata x-snakepit-token)",
            )
        })?),
        None => None,
    };
    let endpoint = match &options.address {
        WorkerAddress::Tcp(addr) => Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| CallError::unavailable(format!("bad address {addr}: {e}")))?,
        // The authority is unused on a Unix socket.
        WorkerAddress::Unix(_) => Endpoint::from_static("http://worker.local"),
    }
    .connect_timeout(options.connect_timeout)
    .tcp_nodelay(true)
    .initial_stream_window_size(Some(4 << 20))
    .initial_connection_window_size(Some(16 << 20));
    let connecting = async {
        match &options.address {
            WorkerAddress::Unix(path) => {
                let path = path.clone();
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
            }
            WorkerAddress::Tcp(_) => endpoint.connect().await,
        }
    };
    let channel = tokio::time::timeout(options.connect_timeout, connecting)
        .await
        .map_err(|_| {
            CallError::unavailable(format!(
                "connecting to {} timed out after {:?}",
                options.address, options.connect_timeout
            ))
        })?
        .map_err(|e| {
            CallError::unavailable(format!(
                "cannot connect to {}: {}",
                options.address,
                chain(&e)
            ))
        })?;
    Ok(
        BridgeServiceClient::with_interceptor(channel, TokenAuth { token })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(x) = source {
        s.push_str(": ");
        s.push_str(&x.to_string());
        source = x.source();
    }
    s
}

/// An mpsc receiver as a `Stream`, for client-streaming requests.
pub(crate) struct RecvStream<T>(pub(crate) mpsc::Receiver<T>);

impl<T> futures_core::Stream for RecvStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}
