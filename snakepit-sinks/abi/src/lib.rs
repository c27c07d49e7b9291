//! The stable C ABI between snakepit and sink plugins.
