//! Locks that outlive a panic: a thread that panicked while holding one leaves its data as
//! it was, and the rest of the program goes on with it instead of panicking in turn (no
//! lock of the crate is held across a user's code). Every lock outside tests is taken through
//! these.

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Taking a [`Mutex`], poisoned or not.
pub(crate) trait Locked<T: ?Sized> {
    /// The lock, taken.
    fn locked(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> Locked<T> for Mutex<T> {
    fn locked(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Taking an [`RwLock`], poisoned or not.
pub(crate) trait RwLocked<T: ?Sized> {
    /// The lock, taken to read.
    fn read_locked(&self) -> RwLockReadGuard<'_, T>;
    /// The lock, taken to write.
    fn write_locked(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLocked<T> for RwLock<T> {
    fn read_locked(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_locked(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(PoisonError::into_inner)
    }
}
