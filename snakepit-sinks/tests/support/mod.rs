//! Test helpers shared by the sink tests.
#![allow(dead_code)]

pub mod otlp;
