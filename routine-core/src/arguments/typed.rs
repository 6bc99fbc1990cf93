//! What `#[task]` builds for each argument type, where the bounds on the
//! user's type are checked: how to hash it into the key, encode it for a
//! worker and decode it there. Reachable from outside only through the
//! macros' hidden module.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ArgumentsDecoder, ArgumentsError, EncodedArguments, FromJson, ToJson};
use crate::codec;
use crate::entry::{ArgumentDigest, ARGUMENT_DIGEST_LEN};
use crate::id::Fingerprint;
use crate::key::{HashSink, Key, KeyError};

/// Hashes a task's arguments one by one, exactly as [`Key::of`] hashes the
/// tuple of them; when the call may be sent to a worker, it also encodes them.
#[doc(hidden)]
pub struct KeyBuilder {
    /// `None` when only the encoding is wanted (see [`KeyBuilder::encoder`]).
    sink: Option<HashSink>,
    encoded: Option<EncodedArguments>,
    /// Each argument's digest, when asked for (see [`KeyBuilder::digests`]).
    digests: Option<Vec<ArgumentDigest>>,
    /// Each argument as JSON, cut at [`ARGUMENT_PREVIEW`] bytes, when asked
    /// for (see [`KeyBuilder::digests_and_previews`]).
    previews: Option<Vec<String>>,
}

/// The most of an argument's JSON a run record keeps, in bytes: enough to
/// recognise a call, never the bulk of a large argument (serialising stops
/// there).
pub const ARGUMENT_PREVIEW: usize = 200;

impl KeyBuilder {
    /// Starts the key of a call of task `name` at `version`, covering its
    /// `code` fingerprint when given; with `encode`, the arguments are also
    /// encoded for a worker.
    pub(crate) fn new(
        name: &str,
        version: &str,
        code: Option<&Fingerprint>,
        encode: bool,
    ) -> KeyBuilder {
        let sink = match code {
            Some(code) => HashSink::for_task_and_code(name, version, code),
            None => HashSink::for_task(name, version),
        };
        KeyBuilder {
            sink: Some(sink),
            encoded: encode.then(EncodedArguments::default),
            digests: None,
            previews: None,
        }
    }

    /// Takes a digest of each argument, hashed as the key hashes it: what
    /// an entry records to tell later which arguments differ.
    pub(crate) fn digests() -> KeyBuilder {
        KeyBuilder {
            sink: None,
            encoded: None,
            digests: Some(Vec::new()),
            previews: None,
        }
    }

    /// The digests, and the start of each argument's JSON: what a run
    /// record shows of a call that ran its body.
    pub(crate) fn digests_and_previews() -> KeyBuilder {
        KeyBuilder {
            previews: Some(Vec::new()),
            ..KeyBuilder::digests()
        }
    }

    /// Encodes the arguments without hashing them: a call whose key is
    /// known, keeping its arguments for a retry.
    pub(crate) fn encoder() -> KeyBuilder {
        KeyBuilder {
            sink: None,
            encoded: Some(EncodedArguments::default()),
            digests: None,
            previews: None,
        }
    }

    /// Adds one argument.
    #[inline]
    pub fn add<T: TaskArgument>(&mut self, argument: &T) -> Result<(), KeyError> {
        if let Some(sink) = &mut self.sink {
            argument.serialize(sink)?;
        }
        if let Some(encoded) = &mut self.encoded {
            codec::encode_into(&mut encoded.bytes, argument)
                .map_err(<KeyError as serde::ser::Error>::custom)?;
            encoded.ends.push(encoded.bytes.len());
        }
        if let Some(digests) = &mut self.digests {
            digests.push(argument_digest(argument)?);
        }
        if let Some(previews) = &mut self.previews {
            previews.push(preview(argument));
        }
        Ok(())
    }

    /// The digests and previews (empty unless asked for) of a
    /// [`digests`](KeyBuilder::digests) builder.
    pub(crate) fn finish_digests(self) -> (Vec<ArgumentDigest>, Vec<String>) {
        (
            self.digests.unwrap_or_default(),
            self.previews.unwrap_or_default(),
        )
    }

    /// The key, and the encoded arguments if they were asked for.
    pub(crate) fn finish(self) -> (Key, Option<EncodedArguments>) {
        let sink = self.sink.expect("a key builder made by `new` hashes");
        (sink.finish_key(), self.encoded)
    }

    /// The encoded arguments of an [`encoder`](KeyBuilder::encoder).
    pub(crate) fn finish_encoding(self) -> EncodedArguments {
        self.encoded.unwrap_or_default()
    }
}

/// The start of `argument` as JSON: at most [`ARGUMENT_PREVIEW`] bytes,
/// then `…`.
fn preview<T: Serialize + ?Sized>(argument: &T) -> String {
    /// Takes bytes up to its limit, then refuses: serialising stops.
    struct Capped(Vec<u8>);
    impl std::io::Write for Capped {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let room = ARGUMENT_PREVIEW - self.0.len();
            if bytes.len() > room {
                self.0.extend_from_slice(&bytes[..room]);
                return Err(std::io::Error::other("the preview is full"));
            }
            self.0.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut capped = Capped(Vec::new());
    let whole = serde_json::to_writer(&mut capped, argument).is_ok();
    let mut text = String::from_utf8_lossy(&capped.0).into_owned();
    if !whole {
        // A character cut in two shows as U+FFFD: drop it.
        if text.ends_with('\u{fffd}') {
            text.pop();
        }
        text.push('…');
    }
    text
}

/// 128 bits of the SHA-256 of an argument's canonical form.
pub(crate) fn argument_digest<T: Serialize + ?Sized>(
    argument: &T,
) -> Result<ArgumentDigest, KeyError> {
    let mut sink = HashSink::new();
    argument.serialize(&mut sink)?;
    let full = sink.finish();
    let mut digest = [0u8; ARGUMENT_DIGEST_LEN];
    digest.copy_from_slice(&full[..ARGUMENT_DIGEST_LEN]);
    Ok(ArgumentDigest(digest))
}

/// What a task argument must be: hashable, storable, decodable on a worker.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task argument",
    note = "task arguments must implement serde's `Serialize` and `Deserialize`, be `Send` and own their data"
)]
pub trait TaskArgument: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> TaskArgument for T {}

/// What a `#[routine(skip)]` argument must be: a call rebuilt from its
/// encoding (on a worker, for a retry, from a command line) has no value for
/// it, and makes one with `Default`.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a skipped task argument",
    note = "a `#[routine(skip)]` argument is not sent to workers nor kept for retries: they make it with `Default::default()`, so its type must implement `Default` (an `Option<T>` does)"
)]
pub trait SkippedArgument: Default + 'static {}

impl<T: Default + 'static> SkippedArgument for T {}

/// The value of a skipped argument for a call rebuilt from its encoding.
#[doc(hidden)]
pub fn skipped_argument<T: SkippedArgument>() -> T {
    T::default()
}

/// How to hash, encode and decode one argument type; built by [`argument`]
/// where the bounds on the type are checked, used without bounds elsewhere.
#[doc(hidden)]
pub struct ArgumentCodec<T> {
    /// Hashes the argument into the key (and encodes it, when asked).
    pub add: fn(&T, &mut KeyBuilder) -> Result<(), KeyError>,
    /// Decodes the next argument of a request.
    pub decode: fn(&mut ArgumentsDecoder<'_>) -> Result<T, ArgumentsError>,
    /// Encodes the argument from JSON, as a command line gives it.
    pub from_json: FromJson,
    /// Decodes the next argument as JSON, as a trigger is given it.
    pub to_json: ToJson,
    /// Decodes the next argument and adds it to a key, as `why` computes
    /// the key of a call given on the command line.
    pub add_encoded: AddEncoded,
}

/// Decodes the next argument and adds it to a key.
pub type AddEncoded = fn(&mut ArgumentsDecoder<'_>, &mut KeyBuilder) -> Result<(), ArgumentsError>;

/// The codec of one argument type.
#[doc(hidden)]
pub const fn argument<T: TaskArgument>() -> ArgumentCodec<T> {
    ArgumentCodec {
        add: add_argument::<T>,
        decode: decode_argument::<T>,
        from_json: argument_from_json::<T>,
        to_json: argument_to_json::<T>,
        add_encoded: add_encoded_argument::<T>,
    }
}

fn add_encoded_argument<T: TaskArgument>(
    decoder: &mut ArgumentsDecoder<'_>,
    key: &mut KeyBuilder,
) -> Result<(), ArgumentsError> {
    let position = decoder.position;
    let value: T = decoder.argument()?;
    key.add(&value).map_err(|e| ArgumentsError {
        position,
        type_name: std::any::type_name::<T>(),
        reason: format!("cannot be hashed: {e}"),
    })
}

fn argument_to_json<T: TaskArgument>(
    decoder: &mut ArgumentsDecoder<'_>,
) -> Result<serde_json::Value, ArgumentsError> {
    let position = decoder.position;
    let value: T = decoder.argument()?;
    serde_json::to_value(&value).map_err(|e| ArgumentsError {
        position,
        type_name: std::any::type_name::<T>(),
        reason: format!("cannot be written as JSON: {e}"),
    })
}

fn argument_from_json<T: TaskArgument>(value: serde_json::Value) -> Result<Vec<u8>, String> {
    let value: T = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let mut encoded = Vec::new();
    codec::encode_into(&mut encoded, &value).map_err(|e| e.to_string())?;
    Ok(encoded)
}

fn add_argument<T: TaskArgument>(value: &T, key: &mut KeyBuilder) -> Result<(), KeyError> {
    key.add(value)
}

fn decode_argument<T: TaskArgument>(
    decoder: &mut ArgumentsDecoder<'_>,
) -> Result<T, ArgumentsError> {
    decoder.argument()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_the_start_of_the_json() {
        assert_eq!(preview(&("a<b", 3)), r#"["a<b",3]"#);
        let long = "é".repeat(300);
        let cut = preview(&long);
        assert!(cut.ends_with('…'), "{cut}");
        assert!(
            cut.len() <= ARGUMENT_PREVIEW + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert!(!cut.contains('\u{fffd}'), "{cut}");
    }
}
