//! The host's own storage calls on a running [`Core`]: flush, and the
//! commit that is started under the core's lock and finished without it.
//! None of them is an export call: the core never sees them, and a trace
//! does not record them.
//!
//! # Security
//!
//! Moves no values: these calls only make writes the core already made
//! durable.
//!
//! # Limitations
//!
//! Only the caretaker thread calls these (see [`crate::shared_core`]);
//! nothing stops another caller from flushing more often than it needs to.

use crate::Core;
use crate::storage::{Commit, Committed, StorageError};

impl Core {
    /// Make the storage's completed writes durable (see
    /// [`Storage::flush`](crate::storage::Storage::flush)). The host calls
    /// this on a timer; it is not an export call, so the core never sees it.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub fn flush_storage(&mut self) -> Result<(), StorageError> {
        self.store.data_mut().caps.storage.flush()
    }

    /// Whether storage holds enough writes to want a commit before the next
    /// flush (see [`Storage::wants_commit`](crate::storage::Storage::wants_commit)).
    pub fn storage_wants_commit(&self) -> bool {
        self.store.data().caps.storage.wants_commit()
    }

    /// Detach storage's held writes into a commit to run without the core
    /// (see [`Storage::start_commit`](crate::storage::Storage::start_commit));
    /// with `durable`, it is a flush. Not an export call: the core never
    /// sees it.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub fn start_storage_commit(&mut self, durable: bool) -> Result<Option<Commit>, StorageError> {
        self.store.data_mut().caps.storage.start_commit(durable)
    }

    /// Hand a detached commit's outcome back to storage.
    ///
    /// # Errors
    ///
    /// The commit's error (its writes are held again for the next one).
    pub fn finish_storage_commit(&mut self, done: Committed) -> Result<(), StorageError> {
        self.store.data_mut().caps.storage.finish_commit(done)
    }
}
