//! Opening a plugin library and validating its descriptor.

use std::path::Path;

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
use snakepit_sink_abi as abi;

use super::error::PluginError;

/// A validated descriptor: every function pointer present, name checked.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    pub name: &'static str,
    pub flags: u64,
    pub create: abi::CreateFn,
    pub emit: abi::EmitFn,
    pub flush: abi::FlushFn,
    pub destroy: abi::DestroyFn,
}

/// Loads `path` (RTLD_NOW | RTLD_LOCAL), never to be unloaded, and validates
/// its descriptor.
pub(crate) fn open(path: &Path) -> Result<Entry, PluginError> {
    // SAFETY: loading a library runs its initialisers; that is what loading
    // a plugin means, and the config named this library.
    let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| {
        PluginError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })?;
    // Never unloaded: dlclose with live thread locals (or a detached, stuck
    // plugin thread) crashes. The symbols below borrow it for 'static.
    let library: &'static Library = Box::leak(Box::new(library));
    // SAFETY: the ABI defines the symbol's type.
    let entry = unsafe { library.get::<abi::EntryFn>(abi::ENTRY_SYMBOL_NUL) }.map_err(|e| {
        PluginError::MissingSymbol {
            path: path.to_path_buf(),
            symbol: abi::ENTRY_SYMBOL,
            message: e.to_string(),
        }
    })?;
    // SAFETY: calling the entry point as the ABI defines it.
    let descriptor = unsafe { (*entry)() };
    // SAFETY: the pointer is checked for null; the header fields are read
    // before the rest, whose presence struct_size vouches for.
    unsafe { validate(path, descriptor) }
}

fn invalid(path: &Path, problem: impl Into<String>) -> PluginError {
    PluginError::InvalidDescriptor {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Checks version, size, pointers and name.
///
/// # Safety
/// `descriptor` must be null or point to at least the two leading `u32`s of
/// a descriptor, living as long as the (never unloaded) library.
unsafe fn validate(path: &Path, descriptor: *const abi::Descriptor) -> Result<Entry, PluginError> {
    if descriptor.is_null() {
        return Err(invalid(path, "the entry point returned a null descriptor"));
    }
    if descriptor.align_offset(std::mem::align_of::<abi::Descriptor>()) != 0 {
        return Err(invalid(path, "the descriptor is misaligned"));
    }
    // SAFETY: non-null and aligned; every ABI version starts with these two.
    let (version, size) = unsafe {
        let header = descriptor.cast::<u32>();
        (header.read(), header.add(1).read())
    };
    if version != abi::ABI_VERSION {
        return Err(PluginError::AbiVersion {
            path: path.to_path_buf(),
            expected: abi::ABI_VERSION,
            found: version,
        });
    }
    if size < abi::DESCRIPTOR_SIZE {
        return Err(PluginError::DescriptorSize {
            path: path.to_path_buf(),
            expected: abi::DESCRIPTOR_SIZE,
            found: size,
        });
    }
    // SAFETY: version and size say the whole struct is there.
    let d = unsafe { descriptor.read() };
    let missing = |which: &str| invalid(path, format!("the `{which}` function pointer is null"));
    let create = d.create.ok_or_else(|| missing("create"))?;
    let emit = d.emit.ok_or_else(|| missing("emit"))?;
    let flush = d.flush.ok_or_else(|| missing("flush"))?;
    let destroy = d.destroy.ok_or_else(|| missing("destroy"))?;
    if d.name.ptr.is_null() || d.name.len == 0 {
        return Err(invalid(path, "the name is empty"));
    }
    if d.name.len > abi::MAX_NAME_LEN {
        return Err(invalid(
            path,
            format!(
                "the name is {} bytes, at most {} are allowed",
                d.name.len,
                abi::MAX_NAME_LEN
            ),
        ));
    }
    // SAFETY: non-null, bounded length, static data of a library that stays.
    let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(d.name.ptr, d.name.len) };
    let name = std::str::from_utf8(bytes)
        .ok()
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        })
        .ok_or_else(|| {
            invalid(
                path,
                format!(
                    "the name {:?} has characters outside [A-Za-z0-9_.-]",
                    String::from_utf8_lossy(bytes)
                ),
            )
        })?;
    Ok(Entry {
        name,
        flags: d.flags,
        create,
        emit,
        flush,
        destroy,
    })
}
