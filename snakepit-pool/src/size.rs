//! Byte sizes in the config: an integer of bytes, or a string with a unit
//! (`"512MiB"`, `"1.5GB"`; `B`, `KB`/`MB`/`GB` in powers of 1000,
//! `KiB`/`MiB`/`GiB` in powers of 1024). Written back as an integer.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses `"1.5GB"`, `"512 MiB"`, `"1000"`; the error says what is accepted.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.replace('_', "").parse().map_err(|_| {
        format!("{text:?} is not a size: expected e.g. 1500000000, \"1.5GB\" or \"512MiB\"")
    })?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?}; use B, KB, MB, GB, KiB, MiB or GiB"
            ))
        }
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Bytes(u64),
    Text(String),
}

/// `#[serde(with = "crate::size::option")]` for an optional size.
pub mod option {
    use super::*;

    /// Reads an integer of bytes or a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Bytes(n)) => Ok(Some(n)),
            Some(Raw::Text(t)) => parse(&t).map(Some).map_err(serde::de::Error::custom),
        }
    }

    /// Writes the number of bytes.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn units_and_errors() {
        assert_eq!(parse("1000"), Ok(1000));
        assert_eq!(parse("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse("512 MiB"), Ok(512 << 20));
        assert_eq!(parse("2KiB"), Ok(2048));
        assert_eq!(parse("1_000 B"), Ok(1000));
        assert!(parse("lots").unwrap_err().contains("not a size"));
        assert!(parse("3 TB").unwrap_err().contains("unknown unit \"TB\""));
    }
}
