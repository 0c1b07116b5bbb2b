//! Kubernetes resource quantities (`100m`, `4Gi`, `1.5`, `2e3`), parsed exactly into milli-units.
//!
//! The packing engine compares and sums quantities constantly, so they are kept as integer
//! milli-units (`1` CPU = `1000`, `1Ki` of memory = `1_024_000`). Sub-milli precision is rounded
//! up, as the kubelet does for requests.

use std::borrow::Cow;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A quantity as written by the user: kept verbatim so it round-trips, parsed on demand.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Quantity(pub String);

/// Why a quantity string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The string is not `<number><suffix>`.
    #[error("{0:?} is not a quantity; write a number with an optional suffix such as 500m, 2, 4Gi or 1.5G")]
    Syntax(String),
    /// The value does not fit in 64-bit milli-units.
    #[error("{0:?} is too large")]
    Overflow(String),
}

// === impl Quantity ===

impl Quantity {
    /// A quantity from any string-like value.
    pub fn new(s: impl Into<String>) -> Self {
        Quantity(s.into())
    }

    /// The value in milli-units (`"1"` -> 1000, `"100m"` -> 100), rounding up.
    pub fn milli(&self) -> Result<i64, QuantityError> {
        parse_milli(&self.0)
    }

    /// The verbatim text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Quantity {
    fn from(s: &str) -> Self {
        Quantity(s.to_string())
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as 500m, 2 or 4Gi")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN
        })
    }
}

/// The pattern Kubernetes publishes for quantities in OpenAPI schemas.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Parses a quantity into milli-units, rounding any remaining fraction up.
pub fn parse_milli(s: &str) -> Result<i64, QuantityError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let syntax = || QuantityError::Syntax(s.to_string());
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(syntax());
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // Scale is expressed as (numerator multiplier, power of ten) relative to milli-units.
    let (mult, pow10): (i128, i32) = match suffix {
        "" => (1, 3),
        "n" => (1, -6),
        "u" => (1, -3),
        "m" => (1, 0),
        "k" => (1, 6),
        "M" => (1, 9),
        "G" => (1, 12),
        "T" => (1, 15),
        "P" => (1, 18),
        "E" => (1, 21),
        "Ki" => (1 << 10, 3),
        "Mi" => (1 << 20, 3),
        "Gi" => (1 << 30, 3),
        "Ti" => (1 << 40, 3),
        "Pi" => (1 << 50, 3),
        "Ei" => (1 << 60, 3),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| syntax())?;
            if !(-30..=30).contains(&exp) {
                return Err(QuantityError::Overflow(s.to_string()));
            }
            (1, exp + 3)
        }
        _ => return Err(syntax()),
    };
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let digits = if digits.len() > 30 {
        return Err(QuantityError::Overflow(s.to_string()));
    } else if digits.is_empty() {
        "0"
    } else {
        digits
    };
    let mantissa: i128 = digits.parse().map_err(|_| syntax())?;
    let pow10 = pow10 - frac_part.len() as i32;
    let value = mantissa
        .checked_mul(mult)
        .ok_or_else(|| QuantityError::Overflow(s.to_string()))?;
    let value = if pow10 >= 0 {
        10i128
            .checked_pow(pow10 as u32)
            .and_then(|p| value.checked_mul(p))
            .ok_or_else(|| QuantityError::Overflow(s.to_string()))?
    } else {
        let div = 10i128
            .checked_pow((-pow10) as u32)
            .ok_or_else(|| QuantityError::Overflow(s.to_string()))?;
        (value + div - 1) / div
    };
    let value = i64::try_from(value).map_err(|_| QuantityError::Overflow(s.to_string()))?;
    Ok(if negative { -value } else { value })
}

/// Formats milli-units of a resource in the unit a person expects (`1500m`, `4`, `3.5Gi`).
pub fn format_milli(resource: &str, milli: i64) -> String {
    let binary = matches!(resource, "memory" | "ephemeral-storage" | "storage")
        || resource.starts_with("hugepages-");
    if binary && milli % 1000 == 0 {
        let bytes = milli / 1000;
        for (suffix, unit) in [
            ("Ti", 1i64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if bytes.abs() >= unit {
                let whole = bytes / unit;
                let rem = bytes % unit;
                if rem == 0 {
                    return format!("{whole}{suffix}");
                }
                // One decimal when it is exact enough to be useful.
                let tenths = (bytes * 10) / unit;
                if bytes.abs() >= unit * 10 || (bytes * 10) % unit == 0 {
                    return format!("{}.{}{suffix}", tenths / 10, (tenths % 10).abs());
                }
            }
        }
        return bytes.to_string();
    }
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        let cases = [
            ("1", 1000),
            ("100m", 100),
            ("1.5", 1500),
            ("0.1", 100),
            ("1Ki", 1_024_000),
            ("4Gi", 4 * (1i64 << 30) * 1000),
            ("1G", 1_000_000_000_000),
            ("2e3", 2_000_000),
            ("1E2", 100_000),
            ("+3", 3000),
            ("-2", -2000),
            ("1n", 1),
            ("1u", 1),
            (".5", 500),
            ("5.", 5000),
            ("0", 0),
        ];
        for (s, want) in cases {
            assert_eq!(parse_milli(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for s in ["", "abc", "1x", "1.2.3", "Gi", ".", "1 Gi", "1e", "--1"] {
            assert!(parse_milli(s).is_err(), "{s:?} should fail");
        }
        assert!(matches!(
            parse_milli("100Ei"),
            Err(QuantityError::Overflow(_))
        ));
    }

    #[test]
    fn accepts_integers_in_yaml() {
        let q: Quantity = serde_json::from_str("4").unwrap_or_default();
        assert_eq!(q.milli(), Ok(4000));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_milli("cpu", 1500), "1500m");
        assert_eq!(format_milli("cpu", 4000), "4");
        assert_eq!(format_milli("memory", 4 * (1 << 30) * 1000), "4Gi");
        assert_eq!(format_milli("memory", 730 * (1 << 30) * 1000), "730Gi");
        assert_eq!(format_milli("memory", 3 * (1 << 29) * 1000), "1.5Gi");
    }

    proptest! {
        #[test]
        fn integer_suffixes_scale(n in 0i64..1_000_000, i in 0usize..4) {
            let (suffix, unit) = [("", 1000i64), ("k", 1_000_000), ("Ki", 1_024_000), ("m", 1)][i];
            prop_assert_eq!(parse_milli(&format!("{n}{suffix}")), Ok(n * unit));
        }
    }
}
