//! Kubernetes quantities: memory `64Mi`, `1G`, `500000000`; cpu `500m`, `2`, `0.5`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A quantity as the user wrote it, with its parsed value in milli-units.
///
/// Memory is read in bytes (`value()`), cpu in millicores (`millis()`). The original text is kept
/// so a round trip through the store shows the user their own spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    text: String,
    millis: u128,
}

impl Quantity {
    /// Parses a Kubernetes quantity. Negative values are refused: tend has no use for them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a quantity");
        let s = text.trim();
        if s.is_empty() || s.len() > 64 {
            return Err(bad());
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let (multiplier_num, multiplier_den): (u128, u128) = match suffix {
            "" => (1, 1),
            "m" => (1, 1000),
            "k" => (1_000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (1_000_000_000_000, 1),
            "P" => (1_000_000_000_000_000, 1),
            "E" => (1_000_000_000_000_000_000, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            _ => return Err(bad()),
        };
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => (w, f),
            None => (number, ""),
        };
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 9 {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac_scaled: u128 = if frac.is_empty() {
            0
        } else {
            let digits: u128 = frac.parse().map_err(|_| bad())?;
            digits * 10u128.pow(9 - frac.len() as u32)
        };
        // Work in nano-units so fractions like 0.5 and 1.5Gi stay exact, then go to milli.
        let nanos = whole
            .checked_mul(1_000_000_000)
            .and_then(|w| w.checked_add(frac_scaled))
            .and_then(|n| n.checked_mul(multiplier_num))
            .ok_or_else(|| format!("{text:?} is too large"))?
            / multiplier_den;
        let millis = nanos.div_ceil(1_000_000);
        if millis > u64::MAX as u128 * 1000 {
            return Err(format!("{text:?} is too large"));
        }
        Ok(Self {
            text: s.to_string(),
            millis,
        })
    }

    /// The value in whole units (bytes for memory), rounded up.
    pub fn value(&self) -> u64 {
        self.millis.div_ceil(1000) as u64
    }

    /// The value in thousandths (millicores for cpu).
    pub fn millis(&self) -> u64 {
        self.millis.min(u64::MAX as u128) as u64
    }

    /// The text the user wrote.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Text(t) => t,
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_forms() {
        assert_eq!(Quantity::parse("64Mi").unwrap().value(), 64 << 20);
        assert_eq!(Quantity::parse("1Gi").unwrap().value(), 1 << 30);
        assert_eq!(Quantity::parse("1.5Gi").unwrap().value(), 3 << 29);
        assert_eq!(Quantity::parse("500000000").unwrap().value(), 500_000_000);
        assert_eq!(Quantity::parse("2G").unwrap().value(), 2_000_000_000);
        assert_eq!(Quantity::parse("12k").unwrap().value(), 12_000);
    }

    #[test]
    fn cpu_forms() {
        assert_eq!(Quantity::parse("500m").unwrap().millis(), 500);
        assert_eq!(Quantity::parse("2").unwrap().millis(), 2000);
        assert_eq!(Quantity::parse("0.25").unwrap().millis(), 250);
        assert_eq!(Quantity::parse(".5").unwrap().millis(), 500);
    }

    #[test]
    fn garbage_is_refused_with_the_text() {
        for bad in [
            "",
            "12XB",
            "-1",
            "1.2.3",
            "Mi",
            "1e3",
            "abc",
            "1 Mi",
            ".",
            "99999999999999999999999999Ei",
        ] {
            let err = Quantity::parse(bad).unwrap_err();
            assert!(
                err.contains("quantity") || err.contains("too large"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn yaml_numbers_are_quantities() {
        let q: Quantity = serde_json::from_str("128").unwrap();
        assert_eq!(q.value(), 128);
        let q: Quantity = serde_json::from_str("0.5").unwrap();
        assert_eq!(q.millis(), 500);
    }
}
