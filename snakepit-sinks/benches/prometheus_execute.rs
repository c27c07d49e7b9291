//! Host `execute` cost with the Prometheus sink attached (placeholder).
fn main() {}
