//! Errors of the telemetry crate.

use snakepit_core::{PatternError, PolicyError};

/// Attaching or detaching a handler failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttachError {
    /// A handler with this id is attached already (ids are unique, as in
    /// `:telemetry`).
    #[error("a handler with id `{0}` is already attached; detach it first or pick another id")]
    DuplicateId(String),
    /// The event name is not in the catalog.
    #[error("unknown event `{0}`: it is not in the catalog (see docs/EVENTS.md)")]
    UnknownEvent(String),
    /// A pattern matched no event.
    #[error("pattern `{0}` matches no event in the catalog")]
    NoMatch(String),
    /// A pattern could not be compiled.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// No events were given.
    #[error("handler `{0}` names no events")]
    NoEvents(String),
    /// No handler has this id.
    #[error("no handler with id `{0}` is attached")]
    NotFound(String),
}

/// A runtime control change was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// A rate outside `[0, 1]`.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A pattern could not be compiled.
    #[error(transparent)]
    Pattern(#[from] PatternError),
}

/// An event name was not found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown event `{0}`: it is not in the catalog (see docs/EVENTS.md)")]
pub struct UnknownEvent(pub String);
