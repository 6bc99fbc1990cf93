//! The entry format: one stored result and what is known about it.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "RTNENTRY"
//!      8     2  format version (3)
//!     10     2  flags: bit 0 set when the entry records a parent call
//!     12     4  header length (166 + 16·n)
//!     16    32  key (SHA-256 of name, version, arguments)
//!     48    32  body fingerprint of the task that produced it
//!     80     8  created at, nanoseconds since the Unix epoch
//!     88     8  run time of the body, nanoseconds
//!     96     8  payload length in bytes
//!    104    16  run ID of the workflow run that computed it (zeros: none)
//!    120    32  key of the call that awaited it (when flag bit 0 is set)
//!    152     8  the writer: which process stored it (zeros: unknown)
//!    160     2  n, the number of argument digests
//!    162  16·n  a digest of each argument (128 bits of its SHA-256)
//! 162+16n    4  CRC-32 (IEEE) of the header before it
//!      h     p  payload: the result, encoded by `codec`
//!    h+p     4  CRC-32 (IEEE) of the payload
//! ```
//!
//! The writer and the argument digests explain an entry later (`why`:
//! which arguments differ from a stored call's, which process wrote it; the
//! store keeps what a writer ID stands for). Version 2 entries (a 156-byte
//! header: the fields up to 152, then the CRC) and version 1 entries (a
//! 108-byte header: the fields up to the payload length, then the CRC) are
//! still read; version 1 records no lineage.
//! All integers are little-endian. The payload checksum trails the payload so
//! an entry is written in one sequential pass, however large.
//!
//! Reading trusts nothing: the header checksum, the key, the declared length
//! against the real length, and the payload checksum are all verified, and a
//! failure is an [`EntryError`], never a panic or a wrong value.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{self, CodecError};
use crate::id::{Fingerprint, RunId};
use crate::key::Key;

/// The first eight bytes of every entry.
pub const MAGIC: [u8; 8] = *b"RTNENTRY";
/// The entry format this build writes (it also reads versions 1 and 2).
pub const FORMAT_VERSION: u16 = 3;
/// Bytes before the payload, in the format this build writes, for an entry
/// of no argument digests; each digest adds [`ARGUMENT_DIGEST_LEN`].
pub const HEADER_LEN: usize = 166;
/// Bytes before the payload in a version 2 entry.
pub const HEADER_LEN_V2: usize = 156;
/// Bytes before the payload in a version 1 entry; also the shortest header.
pub const HEADER_LEN_V1: usize = 108;
/// Bytes of one argument's digest.
pub const ARGUMENT_DIGEST_LEN: usize = 16;
/// The most argument digests an entry holds (a task with more arguments
/// keeps the first ones').
pub const MAX_ARGUMENT_DIGESTS: usize = 255;
/// The longest header this build reads.
const HEADER_LEN_MAX: usize = HEADER_LEN + ARGUMENT_DIGEST_LEN * MAX_ARGUMENT_DIGESTS;
/// Flag: the entry records the call that awaited it.
const HAS_PARENT: u16 = 1;
/// Bytes after the payload.
pub const TRAILER_LEN: usize = 4;

/// What an entry records about its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryMeta {
    /// The call this result answers.
    pub key: Key,
    /// The fingerprint of the task body that computed it.
    pub fingerprint: Fingerprint,
    /// When it was computed.
    pub created_at: SystemTime,
    /// How long the task body ran.
    pub run_time: Duration,
    /// Size of the encoded result.
    pub payload_len: u64,
    /// The workflow run that computed it (none for a version 1 entry).
    pub run: Option<RunId>,
    /// The call that awaited it; none for a run's root call.
    pub parent: Option<Key>,
    /// The process that stored it, if known (see [`Store::get_record`](crate::store::Store::get_record)).
    pub writer: Option<WriterId>,
    /// A digest of each argument of the call, in order (none in entries of
    /// version 2 and older).
    pub arguments: Vec<ArgumentDigest>,
}

/// Which process stored an entry: 64 bits of a digest of its host, process
/// ID, program and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WriterId(pub [u8; 8]);

/// 128 bits of the SHA-256 of one argument's canonical form (as the key
/// hashes it): equal arguments have equal digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArgumentDigest(pub [u8; ARGUMENT_DIGEST_LEN]);

impl ArgumentDigest {
    /// The digest in hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl EntryMeta {
    /// Size of the whole entry: header, payload and trailer.
    pub fn entry_len(&self) -> u64 {
        (self.written_header_len() + TRAILER_LEN) as u64 + self.payload_len
    }

    /// The argument digests this entry is written with.
    fn written_arguments(&self) -> &[ArgumentDigest] {
        &self.arguments[..self.arguments.len().min(MAX_ARGUMENT_DIGESTS)]
    }

    /// The length of the header this build writes for this entry.
    pub fn written_header_len(&self) -> usize {
        HEADER_LEN + ARGUMENT_DIGEST_LEN * self.written_arguments().len()
    }

    fn header(&self) -> Vec<u8> {
        let header_len = self.written_header_len();
        let mut out = vec![0u8; header_len];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let flags = if self.parent.is_some() { HAS_PARENT } else { 0 };
        out[10..12].copy_from_slice(&flags.to_le_bytes());
        out[12..16].copy_from_slice(&(header_len as u32).to_le_bytes());
        out[16..48].copy_from_slice(self.key.as_bytes());
        out[48..80].copy_from_slice(self.fingerprint.as_bytes());
        out[80..88].copy_from_slice(
            &nanos(
                self.created_at
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default(),
            )
            .to_le_bytes(),
        );
        out[88..96].copy_from_slice(&nanos(self.run_time).to_le_bytes());
        out[96..104].copy_from_slice(&self.payload_len.to_le_bytes());
        if let Some(run) = &self.run {
            out[104..120].copy_from_slice(run.as_bytes());
        }
        if let Some(parent) = &self.parent {
            out[120..152].copy_from_slice(parent.as_bytes());
        }
        if let Some(writer) = &self.writer {
            out[152..160].copy_from_slice(&writer.0);
        }
        let arguments = self.written_arguments();
        out[160..162].copy_from_slice(&(arguments.len() as u16).to_le_bytes());
        for (i, digest) in arguments.iter().enumerate() {
            let at = 162 + i * ARGUMENT_DIGEST_LEN;
            out[at..at + ARGUMENT_DIGEST_LEN].copy_from_slice(&digest.0);
        }
        let crc_at = header_len - 4;
        let crc = crc32fast::hash(&out[..crc_at]);
        out[crc_at..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The length of the header that starts with `start` (at least
    /// [`HEADER_LEN_V1`] bytes of an entry), from its version.
    pub fn header_len(start: &[u8]) -> Result<usize, EntryError> {
        if start.len() < HEADER_LEN_V1 {
            return Err(EntryError::Length {
                declared: 0,
                actual: start.len() as u64,
            });
        }
        if start[0..8] != MAGIC {
            return Err(EntryError::Magic);
        }
        let (version, header_len) = (
            u16::from_le_bytes(field(start, 8)),
            u32::from_le_bytes(field(start, 12)),
        );
        let len = header_len as usize;
        match (version, len) {
            (1, HEADER_LEN_V1) | (2, HEADER_LEN_V2) => Ok(len),
            (3, _)
                if (HEADER_LEN..=HEADER_LEN_MAX).contains(&len)
                    && (len - HEADER_LEN).is_multiple_of(ARGUMENT_DIGEST_LEN) =>
            {
                Ok(len)
            }
            (1..=3, _) => Err(EntryError::HeaderLength(header_len)),
            (other, _) => Err(EntryError::FormatVersion(other)),
        }
    }

    /// Parses and verifies a whole header read from storage (version 1 or 2;
    /// [`EntryMeta::header_len`] tells how long it is).
    pub fn parse(header: &[u8]) -> Result<EntryMeta, EntryError> {
        let header_len = EntryMeta::header_len(header)?;
        let header = header.get(..header_len).ok_or(EntryError::Length {
            declared: 0,
            actual: header.len() as u64,
        })?;
        let crc_at = header_len - 4;
        let stored_crc = u32::from_le_bytes(field(header, crc_at));
        if crc32fast::hash(&header[..crc_at]) != stored_crc {
            return Err(EntryError::HeaderChecksum);
        }
        let (run, parent) = match header_len {
            HEADER_LEN_V1 => (None, None),
            _ => {
                let flags = u16::from_le_bytes(field(header, 10));
                let run = RunId::from_bytes(field(header, 104));
                (
                    (!run.is_nil()).then_some(run),
                    (flags & HAS_PARENT != 0).then(|| Key::from_bytes(field(header, 120))),
                )
            }
        };
        let (writer, arguments) = match header_len {
            HEADER_LEN_V1 | HEADER_LEN_V2 => (None, Vec::new()),
            _ => {
                let writer = field::<8>(header, 152);
                let count = u16::from_le_bytes(field(header, 160)) as usize;
                if HEADER_LEN + count * ARGUMENT_DIGEST_LEN != header_len {
                    return Err(EntryError::HeaderLength(header_len as u32));
                }
                let arguments = (0..count)
                    .map(|i| ArgumentDigest(field(header, 162 + i * ARGUMENT_DIGEST_LEN)))
                    .collect();
                ((writer != [0; 8]).then_some(WriterId(writer)), arguments)
            }
        };
        Ok(EntryMeta {
            key: Key::from_bytes(field(header, 16)),
            fingerprint: Fingerprint::from_bytes(field(header, 48)),
            created_at: UNIX_EPOCH + Duration::from_nanos(u64::from_le_bytes(field(header, 80))),
            run_time: Duration::from_nanos(u64::from_le_bytes(field(header, 88))),
            payload_len: u64::from_le_bytes(field(header, 96)),
            run,
            parent,
            writer,
            arguments,
        })
    }

    fn check(&self, expected: &Key, header_len: usize, entry_len: u64) -> Result<(), EntryError> {
        if self.key != *expected {
            return Err(EntryError::KeyMismatch {
                expected: *expected,
                found: self.key,
            });
        }
        let declared = self
            .payload_len
            .checked_add((header_len + TRAILER_LEN) as u64);
        if declared != Some(entry_len) {
            return Err(EntryError::Length {
                declared: self.payload_len,
                actual: entry_len,
            });
        }
        Ok(())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Why a stored entry cannot be used. Every variant means "treat as a miss".
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The entry does not start with the magic bytes.
    #[error("not a routine entry (bad magic bytes)")]
    Magic,
    /// Written by a format this build does not read.
    #[error("entry format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    FormatVersion(u16),
    /// The header checksum does not match.
    #[error("header checksum mismatch")]
    HeaderChecksum,
    /// The header declares an unknown header length.
    #[error("header length {0} is not supported")]
    HeaderLength(u32),
    /// The entry answers another call than the one asked for.
    #[error("entry holds key {found:?}, expected {expected:?}")]
    KeyMismatch {
        /// The key that was looked up.
        expected: Key,
        /// The key recorded in the entry.
        found: Key,
    },
    /// The entry is truncated or has trailing bytes.
    #[error("entry declares a {declared}-byte payload but is {actual} bytes long")]
    Length {
        /// Payload length in the header.
        declared: u64,
        /// Real length of the whole entry.
        actual: u64,
    },
    /// The payload checksum does not match.
    #[error("payload checksum mismatch")]
    PayloadChecksum,
    /// The payload does not decode as the task's result type.
    #[error("payload does not decode as the result type: {0}")]
    Decode(#[source] CodecError),
    /// The payload decoded but did not use all its bytes.
    #[error("payload has {0} bytes left over after decoding")]
    TrailingBytes(u64),
    /// Encoding the value failed.
    #[error("cannot encode the result: {0}")]
    Encode(#[source] CodecError),
    /// Reading or writing the entry failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Verifies an entry held whole in memory; returns its metadata and where its
/// payload lies in `bytes`.
pub fn verify(bytes: &[u8], expected: &Key) -> Result<(EntryMeta, Range<usize>), EntryError> {
    let header_len = EntryMeta::header_len(bytes)?;
    let meta = EntryMeta::parse(bytes)?;
    meta.check(expected, header_len, bytes.len() as u64)?;
    let payload = header_len..bytes.len() - TRAILER_LEN;
    let stored_crc = u32::from_le_bytes(field(bytes, payload.end));
    if crc32fast::hash(&bytes[payload.clone()]) != stored_crc {
        return Err(EntryError::PayloadChecksum);
    }
    Ok((meta, payload))
}

/// Reads and verifies the header at the start of `reader`, of either
/// format version; returns it and its length.
pub fn read_header(mut reader: impl Read) -> Result<(EntryMeta, usize), EntryError> {
    let mut header = vec![0u8; HEADER_LEN_V1];
    reader.read_exact(&mut header)?;
    let header_len = EntryMeta::header_len(&header)?;
    header.resize(header_len, 0);
    reader.read_exact(&mut header[HEADER_LEN_V1..header_len])?;
    Ok((EntryMeta::parse(&header[..header_len])?, header_len))
}

/// Decodes a payload that [`verify`] accepted.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, EntryError> {
    codec::decode_slice(payload).map_err(EntryError::Decode)
}

/// Reads and decodes an entry of `entry_len` bytes streamed from `reader`.
///
/// Memory stays near the size of the decoded value: the payload passes through
/// a fixed buffer on its way to the decoder.
pub fn read<R: Read, T: DeserializeOwned>(
    mut reader: R,
    entry_len: u64,
    expected: &Key,
) -> Result<(EntryMeta, T), EntryError> {
    let (meta, header_len) = read_header(&mut reader).map_err(|e| match e {
        EntryError::Io(io) => truncated(entry_len)(io),
        other => other,
    })?;
    meta.check(expected, header_len, entry_len)?;
    let mut payload = ChecksumReader::new(&mut reader, meta.payload_len);
    let value = codec::decode_from(&mut payload, meta.payload_len).map_err(EntryError::Decode)?;
    let left = payload.unread();
    if left > 0 {
        return Err(EntryError::TrailingBytes(left));
    }
    let crc = payload.crc();
    let mut trailer = [0u8; TRAILER_LEN];
    reader
        .read_exact(&mut trailer)
        .map_err(truncated(entry_len))?;
    if u32::from_le_bytes(trailer) != crc {
        return Err(EntryError::PayloadChecksum);
    }
    Ok((meta, value))
}

fn truncated(entry_len: u64) -> impl Fn(io::Error) -> EntryError {
    move |e| match e.kind() {
        io::ErrorKind::UnexpectedEof => EntryError::Length {
            declared: 0,
            actual: entry_len,
        },
        _ => EntryError::Io(e),
    }
}

/// Writes a whole entry for `value`; `meta.payload_len` must be
/// `codec::encoded_len(value)`. Returns the writer, flushed.
pub fn write<W: Write, T: Serialize + ?Sized>(
    writer: W,
    meta: &EntryMeta,
    value: &T,
) -> Result<W, EntryError> {
    let mut out = ChecksumWriter::new(writer, meta);
    codec::encode_into(&mut out, value).map_err(|e| match e.into_io() {
        Ok(io) => EntryError::Io(io),
        Err(e) => EntryError::Encode(e),
    })?;
    out.finish()
}

/// Writes a whole entry around a payload that is already encoded.
pub fn write_encoded<W: Write>(
    writer: W,
    meta: &EntryMeta,
    payload: &[u8],
) -> Result<W, EntryError> {
    let mut out = ChecksumWriter::new(writer, meta);
    out.write_all(payload)?;
    out.finish()
}

/// Buffers an entry on its way out and checksums the payload part of each
/// buffer as it is flushed; small entries leave in a single write.
struct ChecksumWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// Leading bytes of `buf` that are header, not payload.
    unhashed: usize,
    crc: crc32fast::Hasher,
    expected_payload: u64,
    payload_written: u64,
}

/// Writes are gathered up to this size before they reach the store.
const WRITE_BUFFER: usize = 256 * 1024;

impl<W: Write> ChecksumWriter<W> {
    fn new(inner: W, meta: &EntryMeta) -> Self {
        let whole = usize::try_from(meta.entry_len()).unwrap_or(usize::MAX);
        let mut buf = Vec::with_capacity(whole.min(WRITE_BUFFER));
        buf.extend_from_slice(&meta.header());
        ChecksumWriter {
            inner,
            unhashed: buf.len(),
            buf,
            crc: crc32fast::Hasher::new(),
            expected_payload: meta.payload_len,
            payload_written: 0,
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf[self.unhashed..]);
        self.unhashed = 0;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> Result<W, EntryError> {
        if self.payload_written != self.expected_payload {
            return Err(EntryError::Length {
                declared: self.expected_payload,
                actual: self.payload_written,
            });
        }
        self.crc.update(&self.buf[self.unhashed..]);
        self.unhashed = self.buf.len();
        let crc = self.crc.clone().finalize();
        self.buf.extend_from_slice(&crc.to_le_bytes());
        self.inner.write_all(&self.buf)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChecksumWriter<W> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.payload_written += bytes.len() as u64;
        if self.buf.len() + bytes.len() <= self.buf.capacity() {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        self.drain()?;
        if bytes.len() >= WRITE_BUFFER {
            self.crc.update(bytes);
            self.inner.write_all(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads exactly `len` payload bytes through a buffer, checksumming each
/// buffer as it is filled.
struct ChecksumReader<R: Read> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    filled: usize,
    remaining: u64,
    crc: crc32fast::Hasher,
}

const READ_BUFFER: usize = 256 * 1024;

impl<R: Read> ChecksumReader<R> {
    fn new(inner: R, len: u64) -> Self {
        let size = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .clamp(1, READ_BUFFER);
        ChecksumReader {
            inner,
            buf: vec![0; size].into_boxed_slice(),
            pos: 0,
            filled: 0,
            remaining: len,
            crc: crc32fast::Hasher::new(),
        }
    }

    fn refill(&mut self) -> io::Result<usize> {
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        if want == 0 {
            return Ok(0);
        }
        let got = self.inner.read(&mut self.buf[..want])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.crc.update(&self.buf[..got]);
        self.remaining -= got as u64;
        self.pos = 0;
        self.filled = got;
        Ok(got)
    }

    /// Payload bytes the decoder did not consume.
    fn unread(&self) -> u64 {
        (self.filled - self.pos) as u64 + self.remaining
    }

    fn crc(&self) -> u32 {
        self.crc.clone().finalize()
    }
}

impl<R: Read> Read for ChecksumReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.filled && self.refill()? == 0 {
            return Ok(0);
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    #[inline]
    fn read_exact(&mut self, out: &mut [u8]) -> io::Result<()> {
        // The decoder asks for a few bytes at a time; serve those from the
        // buffer without the generic loop.
        if out.len() <= self.filled - self.pos {
            out.copy_from_slice(&self.buf[self.pos..self.pos + out.len()]);
            self.pos += out.len();
            return Ok(());
        }
        let mut done = 0;
        while done < out.len() {
            match self.read(&mut out[done..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => done += n,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_for<T: Serialize>(key: Key, value: &T) -> EntryMeta {
        EntryMeta {
            key,
            fingerprint: Fingerprint::from_bytes([7; 32]),
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            run_time: Duration::from_millis(12),
            payload_len: codec::encoded_len(value).unwrap(),
            run: Some(RunId::from_bytes([9; 16])),
            parent: Some(Key::of("parent", "1.0.0", &()).unwrap()),
            writer: Some(WriterId([5; 8])),
            arguments: vec![ArgumentDigest([1; 16]), ArgumentDigest([2; 16])],
        }
    }

    #[test]
    fn lineage_round_trips_and_versions_1_and_2_are_still_read() {
        let key = Key::of("t", "1.0.0", &1u8).unwrap();
        let value = String::from("result");
        let bytes = entry_bytes(key, &value);
        let (meta, payload) = verify(&bytes, &key).unwrap();
        assert_eq!(meta, meta_for(key, &value));
        assert_eq!(payload.start, HEADER_LEN + 2 * ARGUMENT_DIGEST_LEN);
        let payload_bytes = &bytes[payload.start..];

        // The same entry in the second format: lineage, no writer or digests.
        let mut v2 = bytes[..HEADER_LEN_V2].to_vec();
        v2[8..10].copy_from_slice(&2u16.to_le_bytes());
        v2[12..16].copy_from_slice(&(HEADER_LEN_V2 as u32).to_le_bytes());
        let crc = crc32fast::hash(&v2[..152]);
        v2[152..156].copy_from_slice(&crc.to_le_bytes());
        v2.extend_from_slice(payload_bytes);
        let (second, _) = verify(&v2, &key).unwrap();
        assert_eq!((second.run, second.parent), (meta.run, meta.parent));
        assert_eq!((second.writer, second.arguments.len()), (None, 0));

        // The same entry in the first format: 108-byte header, no lineage.
        let mut v1 = bytes[..HEADER_LEN_V1].to_vec();
        v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        v1[10..12].copy_from_slice(&0u16.to_le_bytes());
        v1[12..16].copy_from_slice(&(HEADER_LEN_V1 as u32).to_le_bytes());
        let crc = crc32fast::hash(&v1[..104]);
        v1[104..108].copy_from_slice(&crc.to_le_bytes());
        v1.extend_from_slice(payload_bytes);
        let (old, payload) = verify(&v1, &key).unwrap();
        assert_eq!((old.run, old.parent), (None, None));
        assert_eq!(old.created_at, meta.created_at);
        assert_eq!(decode_payload::<String>(&v1[payload]).unwrap(), value);
        let (streamed, read_value): (EntryMeta, String) =
            read(&v1[..], v1.len() as u64, &key).unwrap();
        assert_eq!((streamed, read_value), (old, value));
    }

    fn entry_bytes<T: Serialize>(key: Key, value: &T) -> Vec<u8> {
        write(Vec::new(), &meta_for(key, value), value).unwrap()
    }

    #[test]
    fn round_trips_in_memory_and_streamed() {
        let key = Key::of("t", "1.0.0", &1u8).unwrap();
        let value = (String::from("result"), vec![3u64; 1000]);
        let bytes = entry_bytes(key, &value);
        let (meta, payload) = verify(&bytes, &key).unwrap();
        assert_eq!(meta, meta_for(key, &value));
        assert_eq!(
            decode_payload::<(String, Vec<u64>)>(&bytes[payload]).unwrap(),
            value
        );
        let (meta2, back): (_, (String, Vec<u64>)) =
            read(bytes.as_slice(), bytes.len() as u64, &key).unwrap();
        assert_eq!(meta2, meta);
        assert_eq!(back, value);
        // write_encoded produces the same bytes from a pre-encoded payload.
        let mut payload = Vec::new();
        codec::encode_into(&mut payload, &value).unwrap();
        assert_eq!(write_encoded(Vec::new(), &meta, &payload).unwrap(), bytes);
    }

    #[test]
    fn every_single_byte_flip_is_detected() {
        let key = Key::of("t", "1.0.0", &2u8).unwrap();
        let bytes = entry_bytes(key, &vec![1u32, 2, 3]);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            // Byte 10..12 are reserved flags: ignored by design but covered by
            // the header checksum, so they are detected too.
            assert!(verify(&bad, &key).is_err(), "flip at {i} went unnoticed");
            assert!(
                read::<_, Vec<u32>>(bad.as_slice(), bad.len() as u64, &key).is_err(),
                "streamed flip at {i} went unnoticed"
            );
        }
    }

    #[test]
    fn truncation_and_wrong_key_are_errors() {
        let key = Key::of("t", "1.0.0", &3u8).unwrap();
        let other = Key::of("t", "1.0.0", &4u8).unwrap();
        let bytes = entry_bytes(key, &String::from("abc"));
        for len in 0..bytes.len() {
            assert!(verify(&bytes[..len], &key).is_err());
            assert!(read::<_, String>(&bytes[..len], len as u64, &key).is_err());
        }
        assert!(matches!(
            verify(&bytes, &other),
            Err(EntryError::KeyMismatch { .. })
        ));
    }

    #[test]
    fn wrong_type_is_a_decode_error() {
        let key = Key::of("t", "1.0.0", &5u8).unwrap();
        let bytes = entry_bytes(key, &String::from("abc"));
        let (_, payload) = verify(&bytes, &key).unwrap();
        assert!(decode_payload::<u64>(&bytes[payload]).is_err());
        assert!(read::<_, (u64, u64)>(bytes.as_slice(), bytes.len() as u64, &key).is_err());
    }

    #[test]
    fn large_payload_streams_through_small_buffers() {
        let key = Key::of("t", "1.0.0", &6u8).unwrap();
        let value: Vec<u8> = (0..3 * WRITE_BUFFER + 17).map(|i| i as u8).collect();
        let bytes = entry_bytes(key, &value);
        let (_, back): (_, Vec<u8>) = read(bytes.as_slice(), bytes.len() as u64, &key).unwrap();
        assert_eq!(back, value);
    }
}
