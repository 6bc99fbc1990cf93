//! A task's arguments: hashed into its key, encoded for a worker, decoded
//! there, and converted from and to JSON for the command line and triggers.
//!
//! `#[task]` builds one `ArgumentCodec` per argument type, where the bounds
//! on the user's type are checked; the engine uses the codecs without bounds.
//! Encoded arguments are the codec's encodings of each argument, one after
//! the other.

use crate::codec;

pub(crate) mod typed;

pub(crate) use self::typed::KeyBuilder;

/// A call's arguments encoded one after the other (as
/// [`TaskSpec::invoke`](crate::TaskSpec::invoke) takes them), with where
/// each one ends, so that a dispatcher can send a large one apart.
///
/// ```
/// use routine_core::arguments::EncodedArguments;
///
/// let encoded = EncodedArguments { bytes: vec![1, 2, 3, 4, 5], ends: vec![2, 5] };
/// assert_eq!(encoded.parts().collect::<Vec<_>>(), [&[1, 2][..], &[3, 4, 5][..]]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedArguments {
    /// Every argument's encoding, in order.
    pub bytes: Vec<u8>,
    /// The end of each argument in `bytes`.
    pub ends: Vec<usize>,
}

impl EncodedArguments {
    /// Each argument's encoding.
    pub fn parts(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end])
    }
}

/// Encodes one argument from JSON; the error says why the value does not
/// fit the argument's type.
pub type FromJson = fn(serde_json::Value) -> Result<Vec<u8>, String>;

/// Decodes the next argument of encoded arguments, as JSON.
pub type ToJson = fn(&mut ArgumentsDecoder<'_>) -> Result<serde_json::Value, ArgumentsError>;

/// Reads a task's arguments, one after the other, from their encoding.
#[doc(hidden)]
pub struct ArgumentsDecoder<'a> {
    rest: &'a [u8],
    position: usize,
}

impl<'a> ArgumentsDecoder<'a> {
    pub fn new(encoded: &'a [u8]) -> Self {
        ArgumentsDecoder {
            rest: encoded,
            position: 0,
        }
    }

    pub fn argument<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, ArgumentsError> {
        let limit = self.rest.len() as u64;
        let value = codec::decode_from(&mut self.rest, limit).map_err(|e| ArgumentsError {
            position: self.position,
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        })?;
        self.position += 1;
        Ok(value)
    }

    pub fn finish(self) -> Result<(), ArgumentsError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(ArgumentsError {
                position: self.position,
                type_name: "nothing",
                reason: format!("{} bytes are left over", self.rest.len()),
            })
        }
    }
}

/// A request's arguments do not decode as the task's argument types (a
/// caller built from other code for the same name and version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {position} does not decode as `{type_name}`: {reason}")]
pub struct ArgumentsError {
    /// Zero-based position of the argument.
    pub position: usize,
    /// The type the task expects there.
    pub type_name: &'static str,
    /// What the decoder said.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_decode_in_order_and_completely() {
        let mut encoded = Vec::new();
        codec::encode_into(&mut encoded, &String::from("data")).unwrap();
        codec::encode_into(&mut encoded, &7u32).unwrap();
        let mut decoder = ArgumentsDecoder::new(&encoded);
        assert_eq!(decoder.argument::<String>().unwrap(), "data");
        assert_eq!(decoder.argument::<u32>().unwrap(), 7);
        decoder.finish().unwrap();

        let mut short = ArgumentsDecoder::new(&encoded[..6]);
        let error = short.argument::<String>().unwrap_err();
        assert_eq!(
            (error.position, error.type_name),
            (0, "alloc::string::String")
        );
        let mut long = ArgumentsDecoder::new(&encoded);
        long.argument::<String>().unwrap();
        assert!(long.finish().is_err());
    }
}
