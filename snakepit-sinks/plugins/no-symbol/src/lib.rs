//! Test plugin: a dynamic library that loads fine but does not export
//! `snakepit_sink_plugin_v1`. The host must refuse it and name the symbol.

/// Some exported function that is not the entry point.
#[no_mangle]
pub extern "C" fn snakepit_sink_plugin_v0() -> u32 {
    0
}
