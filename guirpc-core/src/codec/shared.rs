//! [`Bytes`]: a byte argument or return value that shares the message's buffer instead of
//! copying out of it.
//!
//! serde gives a `Deserialize` impl the slice it reads, never the buffer around it. While
//! guirpc decodes a message it holds it as a [`bytes::Bytes`] and names it here, for the
//! thread doing the decoding and for that decoding only; a [`Bytes`] handed a slice of that
//! buffer takes a reference to it (a counter increment) where a `Vec<u8>` or a `ByteBuf`
//! would copy the bytes out.

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

thread_local! {
    /// The buffer being decoded on this thread, if it is shared.
    static SOURCE: RefCell<Option<bytes::Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` with `source` named as the buffer it reads from, so that the [`Bytes`]
/// it decodes share it. Whatever `decode` does, the name is gone when it returns.
pub(crate) fn decoding_from<T>(source: &bytes::Bytes, decode: impl FnOnce() -> T) -> T {
    struct Forget(Option<bytes::Bytes>);
    impl Drop for Forget {
        fn drop(&mut self) {
            let outer = self.0.take();
            SOURCE.with(|source| *source.borrow_mut() = outer);
        }
    }
    let outer = SOURCE.with(|slot| slot.borrow_mut().replace(source.clone()));
    let _forget = Forget(outer);
    decode()
}

/// The slice of the buffer being decoded that `bytes` is, shared; or a copy, when `bytes`
/// is not in it.
fn share(bytes: &[u8]) -> bytes::Bytes {
    SOURCE.with(|source| {
        let source = source.borrow();
        match source.as_ref() {
            Some(buffer) if contains(buffer, bytes) => buffer.slice_ref(bytes),
            _ => bytes::Bytes::copy_from_slice(bytes),
        }
    })
}

fn contains(buffer: &[u8], part: &[u8]) -> bool {
    let (start, end) = (
        buffer.as_ptr() as usize,
        buffer.as_ptr() as usize + buffer.len(),
    );
    let at = part.as_ptr() as usize;
    !part.is_empty() && at >= start && at + part.len() <= end
}

/// Bytes as a function's parameter or return value, read without a copy: a parameter of
/// type `Bytes` shares the request's buffer (and a `Bytes` returned to a caller, the
/// reply's), where `Vec<u8>` or `serde_bytes::ByteBuf` copy the bytes out of it.
///
/// On the wire it is what `ByteBuf` is: MessagePack `bin`, or in JSON an array of numbers.
/// It holds on to the buffer it came from while it lives; call [`Bytes::into_vec`] (a
/// copy) to keep a small part of a large message. Cheap to clone.
///
/// ```
/// use guirpc_core::Bytes;
///
/// #[guirpc_core::rpc]
/// async fn checksum(data: Bytes) -> u32 {
///     data.iter().fold(0u32, |sum, &b| sum.wrapping_mul(31).wrapping_add(u32::from(b)))
/// }
/// # fn main() {}
/// ```
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(bytes::Bytes);

impl Bytes {
    /// No bytes.
    pub const fn new() -> Bytes {
        Bytes(bytes::Bytes::new())
    }

    /// The bytes as `bytes::Bytes`, sharing the same buffer.
    pub fn into_inner(self) -> bytes::Bytes {
        self.0
    }

    /// The bytes in a vector of their own (a copy, unless this is the buffer's only user).
    pub fn into_vec(self) -> Vec<u8> {
        self.0.into()
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Bytes {
        Bytes(bytes.into())
    }
}

impl From<&'static [u8]> for Bytes {
    fn from(bytes: &'static [u8]) -> Bytes {
        Bytes(bytes::Bytes::from_static(bytes))
    }
}

impl From<bytes::Bytes> for Bytes {
    fn from(bytes: bytes::Bytes) -> Bytes {
        Bytes(bytes)
    }
}

impl From<Bytes> for bytes::Bytes {
    fn from(bytes: Bytes) -> bytes::Bytes {
        bytes.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_borrowed_bytes<E>(self, bytes: &'de [u8]) -> Result<Bytes, E> {
        Ok(Bytes(share(bytes)))
    }

    fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes(bytes::Bytes::copy_from_slice(bytes)))
    }

    fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes(bytes.into()))
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Bytes, E> {
        Ok(Bytes(share(text.as_bytes())))
    }

    fn visit_str<E>(self, text: &str) -> Result<Bytes, E> {
        Ok(Bytes(bytes::Bytes::copy_from_slice(text.as_bytes())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(byte) = seq.next_element::<u8>()? {
            bytes.push(byte);
        }
        Ok(Bytes(bytes.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn a_decoded_bytes_shares_the_message_buffer_and_round_trips() {
        let data: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let value = (Bytes::from(data.clone()), 7u8);
        for codec in [Codec::MsgPack, Codec::Json] {
            let body = bytes::Bytes::from(codec.encode(&value).unwrap());
            let (decoded, n): (Bytes, u8) = codec.decode_shared(&body).unwrap();
            assert_eq!((&decoded[..], n), (&data[..], 7));
            if codec == Codec::MsgPack {
                assert!(
                    contains(&body, &decoded),
                    "MessagePack `bin` is shared, not copied"
                );
            }
        }
        // Outside a shared decode, or from another buffer, it copies.
        let body = Codec::MsgPack.encode(&value).unwrap();
        let (copied, _): (Bytes, u8) = Codec::MsgPack.decode(&body).unwrap();
        assert!(!contains(&body, &copied));
        assert_eq!(&copied[..], &data[..]);
        SOURCE.with(|source| assert!(source.borrow().is_none()));
    }

    #[test]
    fn bytes_reads_what_byte_buf_writes() {
        let buf = serde_bytes::ByteBuf::from(vec![1, 2, 3]);
        for codec in [Codec::MsgPack, Codec::Json] {
            let body = bytes::Bytes::from(codec.encode(&buf).unwrap());
            let read: Bytes = codec.decode_shared(&body).unwrap();
            assert_eq!(&read[..], &[1, 2, 3]);
            assert_eq!(codec.encode(&read).unwrap(), body);
        }
    }
}
