//! The C header and the Rust ABI crate agree: a small C program compiled
//! with the system `cc` prints every size, alignment and offset, and they
//! must equal Rust's, as must the constants.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};
use std::path::Path;
use std::process::Command;

use snakepit_sink_abi as abi;

const PROGRAM: &str = r#"
#include <stdalign.h>
#include <stdio.h>
#include "snakepit_sink.h"
#define SIZE(T) printf(#T ".size %zu\n" #T ".align %zu\n", sizeof(T), alignof(T))
#define OFF(T, f) printf(#T "." #f " %zu\n", offsetof(T, f))
int main(void) {
    SIZE(SnakepitStr); OFF(SnakepitStr, ptr); OFF(SnakepitStr, len);
    SIZE(SnakepitValue); OFF(SnakepitValue, tag); OFF(SnakepitValue, payload);
    OFF(SnakepitValue, payload.int_); OFF(SnakepitValue, payload.float_);
    OFF(SnakepitValue, payload.str);
    SIZE(SnakepitField); OFF(SnakepitField, key); OFF(SnakepitField, value);
    SIZE(SnakepitEventView); OFF(SnakepitEventView, name); OFF(SnakepitEventView, timestamp_ns);
    OFF(SnakepitEventView, correlation_id); OFF(SnakepitEventView, span_id);
    OFF(SnakepitEventView, parent_span_id); OFF(SnakepitEventView, trace_id_hi);
    OFF(SnakepitEventView, trace_id_lo); OFF(SnakepitEventView, measurements);
    OFF(SnakepitEventView, measurements_len); OFF(SnakepitEventView, metadata);
    OFF(SnakepitEventView, metadata_len);
    SIZE(SnakepitErrorBuf); OFF(SnakepitErrorBuf, ptr); OFF(SnakepitErrorBuf, cap);
    OFF(SnakepitErrorBuf, len);
    SIZE(SnakepitSinkDescriptor); OFF(SnakepitSinkDescriptor, abi_version);
    OFF(SnakepitSinkDescriptor, struct_size); OFF(SnakepitSinkDescriptor, name);
    OFF(SnakepitSinkDescriptor, flags); OFF(SnakepitSinkDescriptor, create);
    OFF(SnakepitSinkDescriptor, emit); OFF(SnakepitSinkDescriptor, flush);
    OFF(SnakepitSinkDescriptor, destroy);
    printf("const.ABI_VERSION %u\n", SNAKEPIT_SINK_ABI_VERSION);
    printf("const.MAX_NAME_LEN %d\n", SNAKEPIT_SINK_MAX_NAME_LEN);
    printf("const.STATUS_OK %d\nconst.STATUS_ERROR %d\nconst.STATUS_PANICKED %d\n",
           SNAKEPIT_STATUS_OK, SNAKEPIT_STATUS_ERROR, SNAKEPIT_STATUS_PANICKED);
    printf("const.FLAG_CATCHES_PANICS %llu\n", (unsigned long long)SNAKEPIT_FLAG_CATCHES_PANICS);
    printf("const.VALUE_INT %u\nconst.VALUE_FLOAT %u\nconst.VALUE_STR %u\n",
           SNAKEPIT_VALUE_INT, SNAKEPIT_VALUE_FLOAT, SNAKEPIT_VALUE_STR);
    return 0;
}
"#;

/// Compiles and runs the program; returns its `name value` lines.
fn c_layout() -> BTreeMap<String, u64> {
    let dir = tempfile::tempdir().unwrap();
    let (src, exe) = (dir.path().join("layout.c"), dir.path().join("layout"));
    std::fs::write(&src, PROGRAM).unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("abi/include");
    let cc = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("the system C compiler `cc` runs");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

macro_rules! rust_layout {
    ($map:ident; $($c:literal = $t:ty { $($cf:literal => $($f:ident).+),* $(,)? })*) => {
        $(
            $map.insert(concat!($c, ".size").to_string(), size_of::<$t>() as u64);
            $map.insert(concat!($c, ".align").to_string(), align_of::<$t>() as u64);
            $($map.insert(concat!($c, ".", $cf).to_string(), offset_of!($t, $($f).+) as u64);)*
        )*
    };
}

#[test]
fn the_c_header_matches_the_rust_abi() {
    let mut rust = BTreeMap::new();
    rust_layout! { rust;
        "SnakepitStr" = abi::Str { "ptr" => ptr, "len" => len }
        "SnakepitValue" = abi::Value { "tag" => tag, "payload" => payload }
        "SnakepitField" = abi::Field { "key" => key, "value" => value }
        "SnakepitEventView" = abi::EventView {
            "name" => name, "timestamp_ns" => timestamp_ns, "correlation_id" => correlation_id,
            "span_id" => span_id, "parent_span_id" => parent_span_id,
            "trace_id_hi" => trace_id_hi, "trace_id_lo" => trace_id_lo,
            "measurements" => measurements, "measurements_len" => measurements_len,
            "metadata" => metadata, "metadata_len" => metadata_len,
        }
        "SnakepitErrorBuf" = abi::ErrorBuf { "ptr" => ptr, "cap" => cap, "len" => len }
        "SnakepitSinkDescriptor" = abi::Descriptor {
            "abi_version" => abi_version, "struct_size" => struct_size, "name" => name,
            "flags" => flags, "create" => create, "emit" => emit, "flush" => flush,
            "destroy" => destroy,
        }
    }
    let payload = offset_of!(abi::Value, payload) as u64;
    for (c, f) in [
        ("int_", offset_of!(abi::ValuePayload, int)),
        ("float_", offset_of!(abi::ValuePayload, float)),
        ("str", offset_of!(abi::ValuePayload, str)),
    ] {
        rust.insert(format!("SnakepitValue.payload.{c}"), payload + f as u64);
    }
    for (k, v) in [
        ("ABI_VERSION", u64::from(abi::ABI_VERSION)),
        ("MAX_NAME_LEN", abi::MAX_NAME_LEN as u64),
        ("STATUS_OK", abi::STATUS_OK as u64),
        ("STATUS_ERROR", abi::STATUS_ERROR as u64),
        ("STATUS_PANICKED", abi::STATUS_PANICKED as u64),
        ("FLAG_CATCHES_PANICS", abi::FLAG_CATCHES_PANICS),
        ("VALUE_INT", u64::from(abi::VALUE_INT)),
        ("VALUE_FLOAT", u64::from(abi::VALUE_FLOAT)),
        ("VALUE_STR", u64::from(abi::VALUE_STR)),
    ] {
        rust.insert(format!("const.{k}"), v);
    }
    let c = c_layout();
    assert_eq!(c, rust, "C header (left) and Rust ABI (right) disagree");
    assert_eq!(
        u64::from(abi::DESCRIPTOR_SIZE),
        c["SnakepitSinkDescriptor.size"]
    );
}
