//! gRPC client for one snakepit Python worker.
