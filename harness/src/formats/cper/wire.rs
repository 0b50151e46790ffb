//! Little-endian field access shared by every CPER codec, the codec error, and the serde
//! helpers that print wire values as `"0x..."` strings.
//!
//! Every CPER structure is a fixed-size, byte-packed, little-endian table (UEFI 2.10
//! appendix N: "all fields are little endian"; the kernel's include/linux/cper.h declares
//! them under `#pragma pack(1)`). A decoder first takes the whole fixed part as one slice,
//! so a short input fails once, with the structure's name and size, and the field reads
//! that follow cannot run past the end.

use serde::Serializer;

/// Why bytes do not decode as CPER. Offsets count from the start of the input given to the
/// decoder (for [`super::Record::decode`], from the first byte of the status block).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends inside a structure.
    #[error("{structure} at offset {offset}: needs {needed} bytes, only {available} left")]
    Truncated {
        structure: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    /// A length field disagrees with the bytes it describes.
    #[error(
        "{structure} field {field} at offset {offset}: declares {declared} bytes, \
         the structure needs {actual}"
    )]
    BadDataLength {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        declared: u64,
        actual: u64,
    },
    /// A field whose value the spec fixes holds something else.
    #[error("{structure} field {field} at offset {offset}: is {value:#x}, must be {expected:#x}")]
    BadFieldValue {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        value: u64,
        expected: u64,
    },
    /// Bytes remain after a complete structure.
    #[error("{count} bytes after the end of the {structure} at offset {offset}")]
    TrailingBytes {
        structure: &'static str,
        offset: usize,
        count: usize,
    },
}

/// The codec result.
pub type Result<T> = std::result::Result<T, Error>;

/// A cursor over the input that hands out whole structures.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self::with_base(bytes, 0)
    }

    /// A reader over `bytes` that sit at offset `base` of the whole input, so that errors
    /// name absolute offsets.
    pub(crate) fn with_base(bytes: &'a [u8], base: usize) -> Self {
        Self {
            bytes,
            pos: 0,
            base,
        }
    }

    /// Absolute offset of the next byte.
    pub(crate) fn pos(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `len` bytes as the fixed part of `structure`.
    pub(crate) fn take(&mut self, structure: &'static str, len: usize) -> Result<Fields<'a>> {
        let start = self.pos;
        let slice = self
            .bytes
            .get(start..)
            .and_then(|rest| rest.get(..len))
            .ok_or(Error::Truncated {
                structure,
                offset: self.base + start,
                needed: len,
                available: self.remaining(),
            })?;
        self.pos += len;
        Ok(Fields {
            bytes: slice,
            at: 0,
            base: self.base + start,
        })
    }

    /// Takes `len` bytes that belong to `structure` as an opaque blob.
    pub(crate) fn bytes(&mut self, structure: &'static str, len: usize) -> Result<&'a [u8]> {
        Ok(self.take(structure, len)?.bytes)
    }

    /// Fails unless the input is used up.
    pub(crate) fn finish(&self, structure: &'static str) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes {
                structure,
                offset: self.pos(),
                count,
            }),
        }
    }
}

/// Sequential little-endian reads inside one structure whose length was already checked.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
    base: usize,
}

impl Fields<'_> {
    /// Absolute offset of the next field.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.at
    }

    pub(crate) fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        // The caller took the structure's full size from the Reader, and every structure
        // reads exactly its size, so this slice is in bounds; `get` keeps that a non-panic.
        if let Some(src) = self.bytes.get(self.at..self.at + N) {
            out.copy_from_slice(src);
        }
        self.at += N;
        out
    }

    pub(crate) fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

/// Serialises a value as `"0x"` and zero-padded hex digits for its width.
pub(crate) fn hex<T: std::fmt::LowerHex + Copy, S: Serializer>(
    value: &T,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let digits = std::mem::size_of::<T>() * 2;
    serializer.serialize_str(&format!("{:#0width$x}", *value, width = digits + 2))
}

/// Serialises an optional wire value with [`hex`], `None` as null.
pub(crate) fn hex_opt<T: std::fmt::LowerHex + Copy, S: Serializer>(
    value: &Option<T>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Some(v) => hex(v, serializer),
        None => serializer.serialize_none(),
    }
}

/// Serialises a byte blob as one string of lowercase hex pairs, in wire order.
pub(crate) fn hex_bytes<S: Serializer>(
    bytes: &[u8],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    let text: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    serializer.serialize_str(&text)
}
