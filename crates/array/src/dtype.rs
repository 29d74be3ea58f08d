//! NumPy dtypes tern stores: the seed's table (booleans, signed and unsigned integers, floats,
//! complex numbers, fixed-width strings, records), written as NumPy's own `descr` (`"<f8"`,
//! `"|b1"`, `"<U10"`, `[["x", "<f8"], ["n", "<i4"]]`) in a dataset's schema.
//!
//! Stored values are little-endian whatever the source's byte order. Object arrays (Python
//! objects, not values) and types NumPy itself lacks (128-bit integers) are refused, each with
//! a one-line reason.

use arrow::datatypes::DataType;
use serde_json::Value;

use crate::{ArrayError, Result};

/// The type of an array's elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DType {
    Bool,
    /// A signed integer of this many bytes (1, 2, 4, 8).
    Int(u8),
    /// An unsigned integer of this many bytes.
    UInt(u8),
    /// A float of this many bytes (2, 4, 8).
    Float(u8),
    /// A complex number of this many bytes (8: two float32, 16: two float64).
    Complex(u8),
    /// A fixed-width Unicode string of this many characters (UTF-32, NumPy's `U`).
    Unicode(u32),
    /// A fixed-width byte string of this many bytes (NumPy's `S`).
    Bytes(u32),
    /// Raw bytes of this size (NumPy's `V`, as in a record's padding).
    Void(u32),
    /// A record of named fields, packed in order (NumPy's structured dtypes).
    Record(Vec<(String, DType)>),
}

fn unsupported(dtype: &str, why: &str) -> ArrayError {
    ArrayError::UnsupportedDtype {
        dtype: dtype.to_string(),
        why: why.to_string(),
    }
}

/// What a record's description may nest at most.
const MAX_DEPTH: usize = 8;
/// The largest element tern stores (a row of a block's one column).
const MAX_ITEM_BYTES: u64 = 1 << 20;

impl DType {
    /// Bytes one element takes.
    pub fn itemsize(&self) -> u64 {
        match self {
            DType::Bool => 1,
            DType::Int(n) | DType::UInt(n) | DType::Float(n) | DType::Complex(n) => u64::from(*n),
            DType::Unicode(chars) => 4 * u64::from(*chars),
            DType::Bytes(n) | DType::Void(n) => u64::from(*n),
            DType::Record(fields) => fields.iter().map(|(_, t)| t.itemsize()).sum(),
        }
    }

    /// The type of a chunk's `values` column: Arrow's own for numbers, fixed-size binary of
    /// the item size for everything else (the bytes NumPy has, unchanged).
    pub fn arrow_type(&self) -> DataType {
        match self {
            DType::Bool | DType::UInt(1) => DataType::UInt8,
            DType::UInt(2) => DataType::UInt16,
            DType::UInt(4) => DataType::UInt32,
            DType::UInt(_) => DataType::UInt64,
            DType::Int(1) => DataType::Int8,
            DType::Int(2) => DataType::Int16,
            DType::Int(4) => DataType::Int32,
            DType::Int(_) => DataType::Int64,
            DType::Float(2) => DataType::Float16,
            DType::Float(4) => DataType::Float32,
            DType::Float(_) => DataType::Float64,
            other => DataType::FixedSizeBinary(other.itemsize() as i32),
        }
    }

    /// NumPy's `descr` of it, little-endian, as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            DType::Record(fields) => Value::Array(
                fields
                    .iter()
                    .map(|(name, t)| Value::Array(vec![Value::String(name.clone()), t.to_json()]))
                    .collect(),
            ),
            simple => Value::String(simple.descr()),
        }
    }

    /// NumPy's `descr` string of a dtype that is not a record.
    fn descr(&self) -> String {
        match self {
            DType::Bool => "|b1".into(),
            DType::Int(1) => "|i1".into(),
            DType::UInt(1) => "|u1".into(),
            DType::Int(n) => format!("<i{n}"),
            DType::UInt(n) => format!("<u{n}"),
            DType::Float(n) => format!("<f{n}"),
            DType::Complex(n) => format!("<c{n}"),
            DType::Unicode(n) => format!("<U{n}"),
            DType::Bytes(n) => format!("|S{n}"),
            DType::Void(n) => format!("|V{n}"),
            DType::Record(_) => unreachable!("records have a list for a descr"),
        }
    }

    /// A dtype from NumPy's `descr` as JSON (a string, or a record's `[name, descr]` list).
    pub fn from_json(value: &Value) -> Result<Self> {
        Self::from_json_at(value, 0)
    }

    fn from_json_at(value: &Value, depth: usize) -> Result<Self> {
        if depth > MAX_DEPTH {
            return Err(unsupported("(record)", "records nest more than 8 deep"));
        }
        let dtype = match value {
            Value::String(descr) => Self::parse(descr)?,
            Value::Array(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for field in fields {
                    let pair = field.as_array().filter(|p| p.len() == 2).ok_or_else(|| {
                        unsupported(
                            &field.to_string(),
                            "a record field is [name, descr] (sub-array fields are not stored)",
                        )
                    })?;
                    let name = pair[0]
                        .as_str()
                        .ok_or_else(|| unsupported(&field.to_string(), "a field's name is text"))?;
                    out.push((name.to_string(), Self::from_json_at(&pair[1], depth + 1)?));
                }
                if out.is_empty() {
                    return Err(unsupported("[]", "a record needs at least one field"));
                }
                DType::Record(out)
            }
            other => return Err(unsupported(&other.to_string(), "not a NumPy descr")),
        };
        if dtype.itemsize() == 0 {
            return Err(unsupported(&value.to_string(), "elements of no bytes"));
        }
        if dtype.itemsize() > MAX_ITEM_BYTES {
            return Err(unsupported(
                &value.to_string(),
                "elements larger than 1 MiB are not stored",
            ));
        }
        Ok(dtype)
    }

    /// A dtype from one NumPy type string (`"<f8"`, `"|b1"`, `">i4"`, `"<U7"`). Big-endian
    /// types are accepted: their values are stored little-endian ([`Self::is_big_endian`]).
    pub fn parse(descr: &str) -> Result<Self> {
        let body = descr.trim_start_matches(['<', '>', '|', '=']);
        let kind = body
            .chars()
            .next()
            .ok_or_else(|| unsupported(descr, "empty"))?;
        let size_text = &body[kind.len_utf8()..];
        if kind == 'O' {
            return Err(unsupported(
                descr,
                "object arrays hold Python objects, not values: convert to a fixed dtype first (for example astype(str) or astype(float))",
            ));
        }
        if matches!(kind, 'M' | 'm') {
            return Err(unsupported(
                descr,
                "datetime64 and timedelta64 arrays are not stored yet: store their int64 view (x.view('i8'))",
            ));
        }
        let size: u32 = size_text.parse().map_err(|_| {
            unsupported(
                descr,
                "not a NumPy type string tern knows (b, i, u, f, c, U, S, V and a size)",
            )
        })?;
        let bad_size = |what: &str| unsupported(descr, what);
        Ok(match (kind, size) {
            ('b', 1) => DType::Bool,
            ('i' | 'u', 16) => {
                return Err(bad_size(
                    "128-bit integers: NumPy has no such type, so no array of them can be handed back",
                ));
            }
            ('i', 1 | 2 | 4 | 8) => DType::Int(size as u8),
            ('u', 1 | 2 | 4 | 8) => DType::UInt(size as u8),
            ('f', 2 | 4 | 8) => DType::Float(size as u8),
            ('f', _) => {
                return Err(bad_size(
                    "extended-precision floats differ between machines; convert to float64",
                ));
            }
            ('c', 8 | 16) => DType::Complex(size as u8),
            ('U', n) => DType::Unicode(n),
            ('S' | 'a', n) => DType::Bytes(n),
            ('V', n) => DType::Void(n),
            _ => return Err(bad_size("no NumPy type of that kind and size")),
        })
    }

    /// Whether a type string names big-endian values (to be swapped before storing).
    pub fn is_big_endian(descr: &str) -> bool {
        descr.starts_with('>')
    }

    /// The byte runs of one element that are swapped to change its byte order: each number
    /// (and each half of a complex number, each UTF-32 character) is reversed in place.
    pub fn swap_units(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        self.units_at(0, &mut out);
        out
    }

    fn units_at(&self, offset: u64, out: &mut Vec<(u64, u64)>) {
        match self {
            DType::Bool | DType::Bytes(_) | DType::Void(_) => {}
            DType::Int(n) | DType::UInt(n) | DType::Float(n) => out.push((offset, u64::from(*n))),
            DType::Complex(n) => {
                let half = u64::from(*n) / 2;
                out.push((offset, half));
                out.push((offset + half, half));
            }
            DType::Unicode(chars) => {
                out.extend((0..u64::from(*chars)).map(|c| (offset + 4 * c, 4)));
            }
            DType::Record(fields) => {
                let mut at = offset;
                for (_, t) in fields {
                    t.units_at(at, out);
                    at += t.itemsize();
                }
            }
        }
    }

    /// The dtype as NumPy names it to people (`float64`, `<U10`, a record's fields).
    pub fn name(&self) -> String {
        match self {
            DType::Bool => "bool".into(),
            DType::Int(n) => format!("int{}", 8 * n),
            DType::UInt(n) => format!("uint{}", 8 * n),
            DType::Float(n) => format!("float{}", 8 * n),
            DType::Complex(n) => format!("complex{}", 8 * n),
            DType::Record(fields) => {
                let inner: Vec<String> = fields
                    .iter()
                    .map(|(n, t)| format!("{n}: {}", t.name()))
                    .collect();
                format!("{{{}}}", inner.join(", "))
            }
            other => other.descr(),
        }
    }
}

/// Reverse each unit's bytes of every element in `data` (`itemsize` bytes each).
pub fn swap_bytes(data: &mut [u8], itemsize: u64, units: &[(u64, u64)]) {
    if units.is_empty() || itemsize == 0 {
        return;
    }
    for element in data.chunks_exact_mut(itemsize as usize) {
        for &(at, len) in units {
            element[at as usize..(at + len) as usize].reverse();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_dtypes_are_stored_and_others_refused_in_one_line() {
        for (descr, size) in [
            ("|b1", 1),
            ("|i1", 1),
            ("<i8", 8),
            ("<u2", 2),
            ("<f4", 4),
            ("<c16", 16),
            ("<U10", 40),
            ("|S5", 5),
        ] {
            let t = DType::parse(descr).unwrap();
            assert_eq!(t.itemsize(), size, "{descr}");
            assert_eq!(DType::from_json(&t.to_json()).unwrap(), t);
        }
        let record: Value = serde_json::json!([["x", "<f8"], ["n", "<i4"], ["tag", "|S3"]]);
        let t = DType::from_json(&record).unwrap();
        assert_eq!(t.itemsize(), 15);
        assert_eq!(t.to_json(), record);
        for (descr, says) in [
            ("|O", "Python objects"),
            ("<i16", "NumPy has no such type"),
            ("<u16", "NumPy has no such type"),
            ("<M8[ns]", "datetime64"),
            ("<f16", "extended-precision"),
            ("<x4", "no NumPy type"),
        ] {
            let err = DType::parse(descr).unwrap_err().to_string();
            assert!(err.contains(says) && !err.contains('\n'), "{descr}: {err}");
            assert!(err.starts_with(&format!("dtype {descr}")), "{err}");
        }
    }

    #[test]
    fn big_endian_values_swap_per_number_not_per_element() {
        let t = DType::from_json(&serde_json::json!([["a", ">i2"], ["c", ">c8"]])).unwrap();
        assert_eq!(t.swap_units(), vec![(0, 2), (2, 4), (6, 4)]);
        let mut data = vec![0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
        swap_bytes(&mut data, 10, &t.swap_units());
        assert_eq!(data, vec![1, 0, 4, 3, 2, 1, 8, 7, 6, 5]);
    }
}
