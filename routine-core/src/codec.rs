//! The value codec: the only module that names `bincode`.
//!
//! bincode 1.x is complete but no longer maintained, and its 3.0.0 on
//! crates.io is an empty release (RUSTSEC-2025-0141). Everything else in the
//! crate goes through these four functions, so swapping the codec means
//! changing this file and bumping the entry format version.
//!
//! Encoding: fixed-width little-endian integers, `u64` lengths. Decoding is
//! always bounded by a byte limit the caller has checked against the real size
//! of the data, so a corrupt length can never make it allocate more than that.

use std::io::{Read, Write};

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The codec failed to encode or decode a value.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(#[from] Box<bincode::ErrorKind>);

impl CodecError {
    /// The I/O error underneath, when the writer or reader failed rather than
    /// the value.
    pub fn into_io(self) -> Result<std::io::Error, CodecError> {
        match *self.0 {
            bincode::ErrorKind::Io(e) => Ok(e),
            other => Err(CodecError(Box::new(other))),
        }
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
}

/// The exact number of bytes [`encode_into`] will write for `value`.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<u64, CodecError> {
    Ok(options().serialized_size(value)?)
}

/// Streams the encoding of `value` into `writer`.
pub fn encode_into<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> Result<(), CodecError> {
    Ok(options().serialize_into(writer, value)?)
}

/// Decodes one value that fills `bytes` exactly.
pub fn decode_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(options()
        .with_limit(bytes.len() as u64)
        .reject_trailing_bytes()
        .deserialize(bytes)?)
}

/// Decodes one value from `reader`, reading at most `limit` bytes.
pub fn decode_from<R: Read, T: DeserializeOwned>(reader: R, limit: u64) -> Result<T, CodecError> {
    Ok(options().with_limit(limit).deserialize_from(reader)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_length() {
        let value = (String::from("hello"), vec![1u32, 2, 3], Some(2.5f64));
        let mut bytes = Vec::new();
        encode_into(&mut bytes, &value).unwrap();
        assert_eq!(encoded_len(&value).unwrap(), bytes.len() as u64);
        let back: (String, Vec<u32>, Option<f64>) = decode_slice(&bytes).unwrap();
        assert_eq!(back, value);
        let streamed: (String, Vec<u32>, Option<f64>) =
            decode_from(bytes.as_slice(), bytes.len() as u64).unwrap();
        assert_eq!(streamed, value);
    }

    #[test]
    fn corrupt_lengths_are_bounded_errors() {
        // A vector claiming u64::MAX elements must fail, not allocate.
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        assert!(decode_slice::<Vec<u64>>(&bytes).is_err());
        assert!(decode_from::<_, Vec<u8>>(bytes.as_slice(), bytes.len() as u64).is_err());
        // Trailing garbage is not a valid encoding of one value.
        assert!(decode_slice::<u8>(&[1, 2]).is_err());
    }
}
