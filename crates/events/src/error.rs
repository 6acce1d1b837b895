use thiserror::Error;

/// What went wrong in an [`crate::EventStore`] call.
#[derive(Debug, Error)]
pub enum EventError {
    /// SQLite failed (disk full, I/O error, corrupt file). The call had no effect.
    #[error("event store: {0}")]
    Storage(String),
    #[error("no queue named {0:?}")]
    NoSuchQueue(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("payload of {size} bytes is over the {limit}-byte limit")]
    PayloadTooLarge { size: usize, limit: usize },
    #[error("invalid option: {0}")]
    InvalidOption(String),
    #[error("the event store has shut down")]
    Closed,
}

impl From<rusqlite::Error> for EventError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

pub type Result<T, E = EventError> = std::result::Result<T, E>;
