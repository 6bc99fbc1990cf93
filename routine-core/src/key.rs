//! Keys: what names one call of one task, in every process.
//!
//! A [`Key`] is SHA-256 over a key-format version, the task's name and version,
//! and the call's arguments. The arguments are streamed into the hasher by a
//! serde [`Serializer`](serde::Serializer) written for this purpose, so no encoded copy of a large
//! argument is ever built.
//!
//! The encoding is *canonical*: two equal values give the same bytes whatever
//! process made them. Plain values encode like a compact binary format
//! (fixed-width little-endian numbers, length-prefixed strings and sequences).
//! Collections whose iteration order is not part of their value are made
//! order-free: every map, and the standard library's and hashbrown's
//! `HashSet`, hash each entry on its own and feed the *sorted* entry digests to
//! the parent. A `HashMap` built in another process, with another random
//! seed, therefore yields the same key.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use crate::id::Fingerprint;
use serde::ser::{self, Serialize};
use sha2::{Digest, Sha256};

/// Bumped whenever the byte stream fed to the hasher changes, so that keys made
/// by an older encoding can never alias keys made by a newer one.
pub const KEY_FORMAT_VERSION: u8 = 1;

/// Hex digits shown by [`Key::short`]: enough to tell entries apart by eye.
const SHORT_HEX_LEN: usize = 12;

/// The identity of one call: SHA-256 over the task name, version and arguments.
///
/// ```
/// use routine_core::Key;
///
/// let a = Key::of("train", "0.0.1", &(vec![1.0_f64, 2.0], 100_u32)).unwrap();
/// let b = Key::of("train", "0.0.1", &(vec![1.0_f64, 2.0], 100_u32)).unwrap();
/// let c = Key::of("train", "0.0.2", &(vec![1.0_f64, 2.0], 100_u32)).unwrap();
/// assert_eq!(a, b);
/// assert_ne!(a, c);
/// assert_eq!(a.to_hex().len(), 64);
/// assert!(a.to_hex().starts_with(&a.short()));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key([u8; 32]);

impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A digest is already uniform: eight of its bytes make a fine hash.
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(head));
    }
}

/// Builds [`KeyHasher`]s for in-process tables keyed by [`Key`].
#[derive(Clone, Copy, Default, Debug)]
pub struct BuildKeyHasher;

impl BuildHasher for BuildKeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Passes a key's leading bytes through: SipHash over a SHA-256 digest
/// would only cost time on every lookup.
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 ^= value;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A hash map keyed by [`Key`].
pub type KeyMap<V> = std::collections::HashMap<Key, V, BuildKeyHasher>;

impl Key {
    /// Hashes a call of task `name` at `version` with `args` (usually a tuple
    /// of the task's arguments).
    ///
    /// Fails only when `args`' own `Serialize` implementation reports an error.
    pub fn of<A: Serialize + ?Sized>(name: &str, version: &str, args: &A) -> Result<Key, KeyError> {
        let mut sink = HashSink::for_task(name, version);
        args.serialize(&mut sink)?;
        Ok(sink.finish_key())
    }

    /// Wraps raw digest bytes (as stored in an entry header).
    pub const fn from_bytes(bytes: [u8; 32]) -> Key {
        Key(bytes)
    }

    /// The raw digest.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The full lower-case hex form: 64 characters, used as the file name of an
    /// entry.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xf)] as char);
        }
        out
    }

    /// The first 12 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        let mut hex = self.to_hex();
        hex.truncate(SHORT_HEX_LEN);
        hex
    }

    /// Parses the 64-digit hex form (either case).
    ///
    /// ```
    /// use routine_core::Key;
    /// let key = Key::of("t", "1.0.0", &42_u8).unwrap();
    /// assert_eq!(Key::from_hex(&key.to_hex()).unwrap(), key);
    /// assert!(Key::from_hex("not hex").is_err());
    /// ```
    pub fn from_hex(text: &str) -> Result<Key, KeyParseError> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return Err(KeyParseError::Length(bytes.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(KeyParseError::Digit(i * 2))?;
            let low = hex_value(pair[1]).ok_or(KeyParseError::Digit(i * 2 + 1))?;
            out[i] = (high << 4) | low;
        }
        Ok(Key(out))
    }
}

/// A key is written as its hex form in JSON and run records.
impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Key::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

/// The arguments' `Serialize` implementation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot hash the arguments: {0}")]
pub struct KeyError(String);

impl ser::Error for KeyError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        KeyError(msg.to_string())
    }
}

/// A string is not the 64-digit hex form of a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The string does not have 64 characters.
    #[error("a key has 64 hex digits, this has {0} characters")]
    Length(usize),
    /// The character at this position is not a hex digit.
    #[error("character {0} is not a hex digit")]
    Digit(usize),
}

/// Small writes (every `u8` of a `Vec<u8>` arrives alone) are gathered here so
/// the hasher sees large blocks; this keeps hashing a byte vector close to raw
/// SHA-256 throughput.
const SINK_BUFFER: usize = 512;

/// A SHA-256 hasher with a write buffer; it is also the canonical serializer.
pub(crate) struct HashSink {
    hasher: Sha256,
    buf: [u8; SINK_BUFFER],
    len: usize,
}

impl HashSink {
    pub(crate) fn new() -> HashSink {
        HashSink {
            hasher: Sha256::new(),
            buf: [0; SINK_BUFFER],
            len: 0,
        }
    }

    #[inline(always)]
    fn byte(&mut self, byte: u8) {
        if self.len == SINK_BUFFER {
            self.flush();
        }
        self.buf[self.len] = byte;
        self.len += 1;
    }

    #[inline(always)]
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() <= SINK_BUFFER - self.len {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            self.flush();
            if bytes.len() < SINK_BUFFER {
                self.buf[..bytes.len()].copy_from_slice(bytes);
                self.len = bytes.len();
            } else {
                self.hasher.update(bytes);
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
    }

    fn len_prefixed(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }

    /// A sink primed with the key prefix of one task; the arguments follow.
    pub(crate) fn for_task(name: &str, version: &str) -> HashSink {
        let mut sink = HashSink::new();
        sink.write(b"routine-key");
        sink.byte(KEY_FORMAT_VERSION);
        sink.len_prefixed(name.as_bytes());
        sink.len_prefixed(version.as_bytes());
        sink
    }

    /// The prefix of a task whose key covers its code (`on_code_change =
    /// "rerun"`): the fingerprint follows the version, so no key of the
    /// other policy can equal it.
    pub(crate) fn for_task_and_code(name: &str, version: &str, code: &Fingerprint) -> HashSink {
        let mut sink = HashSink::for_task(name, version);
        sink.write(b"code");
        sink.write(code.as_bytes());
        sink
    }

    pub(crate) fn finish_key(self) -> Key {
        Key(self.finish())
    }

    pub(crate) fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.hasher.finalize().into()
    }
}

/// Tags that tell how a sequence was encoded, so the two encodings of a
/// sequence can never produce the same bytes.
const SEQ_INLINE: u8 = 0;
const SEQ_STREAMED: u8 = 1;
const SEQ_UNORDERED: u8 = 2;

/// Collections that serialize as a sequence but whose order is not part of
/// their value. serde does not tell a set from a list, so the type's name is
/// the only witness; `type_name` is resolved at compile time.
fn is_unordered_set<I>() -> bool {
    let name = std::any::type_name::<I>().trim_start_matches('&');
    [
        "std::collections::hash::set::HashSet<",
        "hashbrown::set::HashSet<",
        "indexmap::set::IndexSet<",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

fn digest_of<T: Serialize + ?Sized>(value: &T) -> Result<[u8; 32], KeyError> {
    let mut sink = HashSink::new();
    value.serialize(&mut sink)?;
    Ok(sink.finish())
}

/// Feeds `count` and the sorted digests: the order-free form of a collection.
fn write_unordered(sink: &mut HashSink, mut digests: Vec<[u8; 32]>) {
    digests.sort_unstable();
    sink.write(&(digests.len() as u64).to_le_bytes());
    for digest in &digests {
        sink.write(digest);
    }
}

impl<'a> ser::Serializer for &'a mut HashSink {
    type Ok = ();
    type Error = KeyError;
    type SerializeSeq = SeqHasher<'a>;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = MapHasher<'a>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), KeyError> {
        self.byte(u8::from(v));
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_i128(self, v: i128) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), KeyError> {
        self.byte(v);
        Ok(())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_u128(self, v: u128) -> Result<(), KeyError> {
        self.write(&v.to_le_bytes());
        Ok(())
    }
    // Every NaN is one value for keying purposes; -0.0 and 0.0 stay distinct
    // because they are distinct inputs to a deterministic function.
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), KeyError> {
        let v = if v.is_nan() { f32::NAN } else { v };
        self.write(&v.to_bits().to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), KeyError> {
        let v = if v.is_nan() { f64::NAN } else { v };
        self.write(&v.to_bits().to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), KeyError> {
        self.write(&u32::from(v).to_le_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), KeyError> {
        self.len_prefixed(v.as_bytes());
        Ok(())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), KeyError> {
        self.len_prefixed(v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<(), KeyError> {
        self.byte(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), KeyError> {
        self.byte(1);
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), KeyError> {
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), KeyError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
    ) -> Result<(), KeyError> {
        self.write(&index.to_le_bytes());
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        self.write(&index.to_le_bytes());
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqHasher<'a>, KeyError> {
        Ok(match len {
            Some(len) => {
                self.byte(SEQ_INLINE);
                self.write(&(len as u64).to_le_bytes());
                SeqHasher::Inline(self)
            }
            // The length is only known at the end: hash the elements apart and
            // give the parent (count, digest), which is canonical either way.
            None => SeqHasher::Streamed {
                parent: self,
                elements: Box::new(HashSink::new()),
                count: 0,
            },
        })
    }
    fn collect_seq<I>(self, iter: I) -> Result<(), KeyError>
    where
        I: IntoIterator,
        I::Item: Serialize,
    {
        if is_unordered_set::<I>() {
            let digests = iter
                .into_iter()
                .map(|item| digest_of(&item))
                .collect::<Result<Vec<_>, _>>()?;
            self.byte(SEQ_UNORDERED);
            write_unordered(self, digests);
            return Ok(());
        }
        let iter = iter.into_iter();
        match iter.size_hint() {
            (low, Some(high)) if low == high => {
                // The hot path of large vectors: elements straight into the
                // sink, no per-element dispatch.
                self.byte(SEQ_INLINE);
                self.write(&(low as u64).to_le_bytes());
                let mut count = 0usize;
                for item in iter {
                    item.serialize(&mut *self)?;
                    count += 1;
                }
                if count != low {
                    return Err(ser::Error::custom(
                        "a sequence yielded another number of items than it announced",
                    ));
                }
                Ok(())
            }
            _ => {
                let mut seq = ser::Serializer::serialize_seq(self, None)?;
                for item in iter {
                    ser::SerializeSeq::serialize_element(&mut seq, &item)?;
                }
                ser::SerializeSeq::end(seq)
            }
        }
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self, KeyError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, KeyError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, KeyError> {
        self.write(&index.to_le_bytes());
        Ok(self)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<MapHasher<'a>, KeyError> {
        Ok(MapHasher {
            parent: self,
            entry: None,
            digests: Vec::new(),
        })
    }
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, KeyError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, KeyError> {
        self.write(&index.to_le_bytes());
        Ok(self)
    }
}

/// Hashes the elements of a sequence, inline when its length is known.
pub(crate) enum SeqHasher<'a> {
    Inline(&'a mut HashSink),
    Streamed {
        parent: &'a mut HashSink,
        elements: Box<HashSink>,
        count: u64,
    },
}

impl ser::SerializeSeq for SeqHasher<'_> {
    type Ok = ();
    type Error = KeyError;

    #[inline]
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        match self {
            SeqHasher::Inline(sink) => value.serialize(&mut **sink),
            SeqHasher::Streamed {
                elements, count, ..
            } => {
                *count += 1;
                value.serialize(&mut **elements)
            }
        }
    }

    fn end(self) -> Result<(), KeyError> {
        if let SeqHasher::Streamed {
            parent,
            elements,
            count,
        } = self
        {
            parent.byte(SEQ_STREAMED);
            parent.write(&count.to_le_bytes());
            parent.write(&elements.finish());
        }
        Ok(())
    }
}

/// Hashes every entry of a map on its own and feeds the sorted digests.
pub(crate) struct MapHasher<'a> {
    parent: &'a mut HashSink,
    entry: Option<Box<HashSink>>,
    digests: Vec<[u8; 32]>,
}

impl ser::SerializeMap for MapHasher<'_> {
    type Ok = ();
    type Error = KeyError;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), KeyError> {
        let mut entry = Box::new(HashSink::new());
        key.serialize(&mut *entry)?;
        self.entry = Some(entry);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
        let mut entry = self
            .entry
            .take()
            .ok_or_else(|| ser::Error::custom("map value serialized before its key"))?;
        value.serialize(&mut *entry)?;
        self.digests.push(entry.finish());
        Ok(())
    }

    fn end(self) -> Result<(), KeyError> {
        write_unordered(self.parent, self.digests);
        Ok(())
    }
}

macro_rules! inline_compound {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut HashSink {
            type Ok = ();
            type Error = KeyError;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), KeyError> {
                value.serialize(&mut **self)
            }

            fn end(self) -> Result<(), KeyError> {
                Ok(())
            }
        }
    )*};
}

inline_compound!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

// Field names are fixed by the type, and the type by the task's name and
// version, so only the values are hashed.
impl ser::SerializeStruct for &mut HashSink {
    type Ok = ();
    type Error = KeyError;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        value.serialize(&mut **self)
    }

    fn skip_field(&mut self, key: &'static str) -> Result<(), KeyError> {
        // A skipped field must not let its neighbours shift into its place.
        self.len_prefixed(key.as_bytes());
        Ok(())
    }

    fn end(self) -> Result<(), KeyError> {
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut HashSink {
    type Ok = ();
    type Error = KeyError;

    #[inline]
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _key: &'static str,
        value: &T,
    ) -> Result<(), KeyError> {
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), KeyError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

    use super::*;

    fn key<A: Serialize>(args: &A) -> Key {
        Key::of("t", "1.0.0", args).unwrap()
    }

    #[test]
    fn hash_map_key_ignores_insertion_order_and_seed() {
        let forward: HashMap<String, u32> = (0..200).map(|i| (format!("k{i}"), i)).collect();
        let backward: HashMap<String, u32> = (0..200).rev().map(|i| (format!("k{i}"), i)).collect();
        assert_eq!(key(&forward), key(&backward));
        let mut changed = forward.clone();
        changed.insert("k7".into(), 8);
        assert_ne!(key(&forward), key(&changed));
    }

    #[test]
    fn hash_set_key_ignores_order_but_vec_does_not() {
        let a: HashSet<u64> = (0..500).collect();
        let b: HashSet<u64> = (0..500).rev().collect();
        assert_eq!(key(&a), key(&b));
        assert_ne!(key(&vec![1u8, 2]), key(&vec![2u8, 1]));
        // A set and the list of the same elements are different arguments.
        let sorted: BTreeSet<u64> = (0..500).collect();
        assert_ne!(key(&a), key(&sorted));
    }

    #[test]
    fn nested_maps_are_canonical() {
        let make = |rev: bool| {
            let mut outer: HashMap<u8, HashMap<String, Vec<u8>>> = HashMap::new();
            let order: Vec<u8> = if rev {
                (0..20).rev().collect()
            } else {
                (0..20).collect()
            };
            for i in order {
                let inner = (0..i).map(|j| (j.to_string(), vec![i, j])).collect();
                outer.insert(i, inner);
            }
            outer
        };
        assert_eq!(key(&make(false)), key(&make(true)));
    }

    #[test]
    fn maps_agree_with_btreemap_of_same_entries() {
        let hash: HashMap<u8, u8> = (0..50).map(|i| (i, i * 2)).collect();
        let tree: BTreeMap<u8, u8> = (0..50).map(|i| (i, i * 2)).collect();
        assert_eq!(key(&hash), key(&tree));
    }

    #[test]
    fn name_version_and_boundaries_separate_keys() {
        assert_ne!(
            Key::of("ab", "1.0.0", &()).unwrap(),
            Key::of("a", "b1.0.0", &()).unwrap()
        );
        assert_ne!(key(&("ab", "c")), key(&("a", "bc")));
        assert_ne!(
            key(&(vec![1u8], vec![2u8, 3])),
            key(&(vec![1u8, 2], vec![3u8]))
        );
        assert_ne!(key(&Some(0u8)), key(&None::<u8>));
        assert_eq!(key(&f64::NAN), key(&-f64::NAN));
    }

    #[test]
    fn streamed_sequence_matches_itself_and_differs_from_other_lengths() {
        struct Unsized(Vec<u32>);
        impl Serialize for Unsized {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().filter(|_| true))
            }
        }
        assert_eq!(key(&Unsized(vec![1, 2, 3])), key(&Unsized(vec![1, 2, 3])));
        assert_ne!(key(&Unsized(vec![1, 2, 3])), key(&Unsized(vec![1, 2])));
    }

    #[test]
    fn known_vector_pins_the_format() {
        // Changing this value means every stored result is orphaned: bump
        // KEY_FORMAT_VERSION and say so in the changelog.
        let key = Key::of(
            "train",
            "0.0.1",
            &(String::from("data"), 100_u32, vec![0.1_f64]),
        )
        .unwrap();
        assert_eq!(
            key.to_hex(),
            "ba67de32e1df58a1d01a8d87b9b08568a461454ab5de1cdb3b25887f7e1698f2"
        );
        // The same serde shape from other Rust types gives the same key.
        let borrowed = Key::of("train", "0.0.1", &("data", 100_u32, [0.1_f64].as_slice())).unwrap();
        assert_eq!(borrowed, key);
        assert_eq!(key.short().len(), 12);
    }

    #[test]
    fn arguments_hashed_one_by_one_equal_the_tuple() {
        // `#[task]` hashes arguments one at a time; it must agree with
        // `Key::of` over the tuple of them.
        let mut sink = HashSink::for_task("train", "0.0.1");
        "data".serialize(&mut sink).unwrap();
        100_u32.serialize(&mut sink).unwrap();
        let tuple = Key::of("train", "0.0.1", &("data", 100_u32)).unwrap();
        assert_eq!(sink.finish_key(), tuple);
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let k = key(&1u8);
        assert_eq!(Key::from_hex(&k.to_hex().to_uppercase()).unwrap(), k);
        assert_eq!(Key::from_hex("ab"), Err(KeyParseError::Length(2)));
        let mut bad = k.to_hex();
        bad.replace_range(3..4, "g");
        assert_eq!(Key::from_hex(&bad), Err(KeyParseError::Digit(3)));
    }
}
