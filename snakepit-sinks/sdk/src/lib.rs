//! SDK for writing snakepit sink plugins in Rust.
