//! gRPC client for one snakepit Python worker.
#[allow(missing_docs, clippy::all)]
mod proto {
    tonic::include_proto!("snakepit.bridge");
}
