//! Test plugin: a well-formed descriptor that claims ABI version 2. The host
//! (version 1) must refuse it with a message naming both versions.

use snakepit_sink_sdk::{abi, descriptor, Event, SinkPlugin};

/// A sink that would accept everything, if it were ever loaded.
pub struct Future;

impl SinkPlugin for Future {
    fn create(_config_json: &str) -> Result<Self, String> {
        Ok(Future)
    }
    fn emit(&mut self, _event: &Event<'_>) -> Result<(), String> {
        Ok(())
    }
}

static DESCRIPTOR: abi::Descriptor = abi::Descriptor {
    abi_version: 2,
    ..descriptor::<Future>("wrong-abi")
};

/// The entry point, with the wrong version inside.
#[no_mangle]
pub extern "C" fn snakepit_sink_plugin_v1() -> *const abi::Descriptor {
    &DESCRIPTOR
}
