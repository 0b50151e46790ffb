//! Register values and addresses as scenario files and reports write them: `"0x..."`.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A 64-bit value that serializes as a `"0x..."` string (the report convention) and
/// deserializes from such a string, a decimal string, or a JSON integer, so that
/// `"esr": "0x96000410"` and `"vector_offset": 512` both read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hex(pub u64);

impl Hex {
    /// The low 32 bits: ESR_ELx values are compared on these, because Linux 6.1 returns
    /// injected syndromes sign-extended (docs/ras-facts.md §3: 0xffffffff96000010).
    pub fn low32(self) -> u32 {
        // Truncation is the point: bits 63:32 of ESR_ELx are RES0 for every syndrome here.
        (self.0 & 0xFFFF_FFFF) as u32
    }
}

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl From<u64> for Hex {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HexVisitor)
    }
}

struct HexVisitor;

impl de::Visitor<'_> for HexVisitor {
    type Value = Hex;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a \"0x...\" hex string or a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Hex, E> {
        Ok(Hex(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Hex, E> {
        u64::try_from(v)
            .map(Hex)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Hex, E> {
        let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(digits) if !digits.is_empty() => u64::from_str_radix(digits, 16).ok(),
            Some(_) => None,
            None if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
            None => None,
        };
        parsed
            .map(Hex)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

/// Bytes that serialize as one `"0x..."` string of hex digit pairs (the report's CPER
/// `hex`), and read back from it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HexBytes(pub Vec<u8>);

impl fmt::Display for HexBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let digits = s.strip_prefix("0x").unwrap_or(&s);
        if digits.len() % 2 != 0 {
            return Err(de::Error::invalid_length(
                digits.len(),
                &"an even number of hex digits",
            ));
        }
        (0..digits.len())
            .step_by(2)
            .map(|i| {
                digits
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Str(&s), &"hex bytes"))
            })
            .collect::<Result<Vec<u8>, D::Error>>()
            .map(HexBytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_strings_and_integers_and_writes_0x() {
        let v: Vec<Hex> = serde_json::from_str(r#"["0x96000410", "512", 512, "0X1f"]"#).unwrap();
        assert_eq!(v, [Hex(0x9600_0410), Hex(512), Hex(512), Hex(0x1f)]);
        assert_eq!(serde_json::to_string(&Hex(0x200)).unwrap(), r#""0x200""#);
    }

    #[test]
    fn hex_rejects_junk_with_the_expected_form() {
        for bad in [r#""0x""#, r#""96zz""#, r#""""#, "-1", r#""0x1_0""#] {
            let err = serde_json::from_str::<Hex>(bad).unwrap_err().to_string();
            assert!(err.contains("\"0x...\" hex string"), "{bad}: {err}");
        }
    }

    #[test]
    fn low32_drops_the_sign_extension_linux_6_1_adds() {
        assert_eq!(Hex(0xffff_ffff_9600_0010).low32(), 0x9600_0010);
    }

    #[test]
    fn hex_bytes_round_trip() {
        let b = HexBytes(vec![0x01, 0x00, 0xab]);
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(s, r#""0x0100ab""#);
        assert_eq!(serde_json::from_str::<HexBytes>(&s).unwrap(), b);
        assert!(serde_json::from_str::<HexBytes>(r#""0x123""#).is_err());
        assert!(serde_json::from_str::<HexBytes>(r#""0xzz""#).is_err());
    }
}
