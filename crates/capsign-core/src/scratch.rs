//! Per-thread scratch buffers for the request path's temporary bytes (the claims of a JWT
//! being signed, a cookie being opened), so that a request does not allocate them anew.
//!
//! A buffer is lent for the length of a closure and cleared before the next use; one grown
//! past [`MAX_RETAINED`] bytes is dropped afterwards, so a thread keeps at most that much. A
//! nested use (the buffer already lent on this thread) gets a fresh buffer instead.

use std::cell::RefCell;

/// The most bytes a thread's buffer keeps between uses.
pub(crate) const MAX_RETAINED: usize = 16 * 1024;

thread_local! {
    static BYTES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static TEXT: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A buffer that can be lent: emptied before each use, measured after.
trait Buffer: Default {
    fn clear(&mut self);
    fn capacity(&self) -> usize;
}

impl Buffer for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self);
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
}

impl Buffer for String {
    fn clear(&mut self) {
        String::clear(self);
    }
    fn capacity(&self) -> usize {
        String::capacity(self)
    }
}

/// Lends the buffer in `cell` to `f`, emptied; a fresh one when it is already lent.
fn lend<B: Buffer, R>(cell: &RefCell<B>, f: impl FnOnce(&mut B) -> R) -> R {
    match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            let out = f(&mut buf);
            if buf.capacity() > MAX_RETAINED {
                *buf = B::default();
            }
            out
        }
        Err(_) => f(&mut B::default()),
    }
}

/// Runs `f` with an empty byte buffer.
pub(crate) fn with_bytes<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    BYTES.with(|cell| lend(cell, f))
}

/// Runs `f` with an empty string buffer.
pub(crate) fn with_text<R>(f: impl FnOnce(&mut String) -> R) -> R {
    TEXT.with(|cell| lend(cell, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_lent_empty_and_nested_use_gets_its_own() {
        with_bytes(|b| b.extend_from_slice(b"left over"));
        with_bytes(|outer| {
            assert!(outer.is_empty(), "lent empty");
            outer.push(1);
            with_bytes(|inner| {
                assert!(inner.is_empty(), "a nested use gets a fresh buffer");
                inner.push(2);
            });
            assert_eq!(outer, &[1]);
        });
        with_text(|t| t.push('x'));
        with_text(|t| assert!(t.is_empty()));
    }

    #[test]
    fn a_grown_buffer_is_not_kept() {
        with_bytes(|b| b.resize(MAX_RETAINED * 2, 0));
        BYTES.with(|cell| assert!(cell.borrow().capacity() <= MAX_RETAINED));
        with_bytes(|b| b.resize(100, 0));
        BYTES.with(|cell| assert!(cell.borrow().capacity() >= 100, "a small one is kept"));
    }
}
