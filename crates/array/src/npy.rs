//! NumPy's `.npy` files (format versions 1, 2 and 3): the header read and written, the data
//! after it read a band at a time. Big-endian data is swapped to little-endian as it is read;
//! Fortran-order data is turned to C order, which needs the whole array in memory.

use std::io::{Read, Write};

use serde_json::Value;

use crate::dtype::swap_bytes;
use crate::{ArrayError, DType, Result};

const MAGIC: &[u8] = b"\x93NUMPY";
/// The longest header tern reads (NumPy writes a few hundred bytes).
const MAX_HEADER: usize = 1 << 20;

fn bad(reason: impl Into<String>) -> ArrayError {
    ArrayError::BadNpy {
        reason: reason.into(),
    }
}

/// What a `.npy` header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub dtype: DType,
    /// The byte runs of an element stored big-endian in the file (reversed as read).
    pub big_endian: Vec<(u64, u64)>,
    pub fortran_order: bool,
    pub shape: Vec<u64>,
}

/// Read the header of a `.npy` stream, leaving `input` at the first byte of data.
pub fn read_header(input: &mut impl Read) -> Result<Header> {
    let mut magic = [0u8; 8];
    input
        .read_exact(&mut magic)
        .map_err(|_| bad("shorter than a header"))?;
    if &magic[..6] != MAGIC {
        return Err(bad("it does not start with \\x93NUMPY"));
    }
    let length = match magic[6] {
        1 => {
            let mut n = [0u8; 2];
            input.read_exact(&mut n)?;
            u16::from_le_bytes(n) as usize
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            input.read_exact(&mut n)?;
            u32::from_le_bytes(n) as usize
        }
        v => return Err(bad(format!("format version {v} (tern reads 1, 2 and 3)"))),
    };
    if length > MAX_HEADER {
        return Err(bad(format!("a header of {length} bytes")));
    }
    let mut text = vec![0u8; length];
    input
        .read_exact(&mut text)
        .map_err(|_| bad("the header is cut short"))?;
    let text = String::from_utf8(text).map_err(|_| bad("the header is not text"))?;
    let dict = Literal::parse(&text)?;
    let Value::Object(fields) = dict else {
        return Err(bad("the header is not a dict"));
    };
    let descr = fields
        .get("descr")
        .ok_or_else(|| bad("no 'descr' in the header"))?;
    let dtype = DType::from_json(&little_endian(descr))?;
    let mut big_endian = Vec::new();
    big_endian_units(descr, 0, &mut big_endian)?;
    let fortran_order = match fields.get("fortran_order") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(bad("no fortran_order in the header")),
    };
    let shape = match fields.get("shape") {
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| d.as_u64().ok_or_else(|| bad(format!("shape holds {d}"))))
            .collect::<Result<Vec<u64>>>()?,
        _ => return Err(bad("no shape in the header")),
    };
    Ok(Header {
        dtype,
        big_endian,
        fortran_order,
        shape,
    })
}

/// The byte runs of the big-endian numbers of an element of `descr`, from `offset`; returns
/// the element's size.
fn big_endian_units(descr: &Value, offset: u64, out: &mut Vec<(u64, u64)>) -> Result<u64> {
    match descr {
        Value::String(s) => {
            let dtype = DType::parse(s)?;
            if DType::is_big_endian(s) {
                out.extend(
                    dtype
                        .swap_units()
                        .into_iter()
                        .map(|(at, n)| (offset + at, n)),
                );
            }
            Ok(dtype.itemsize())
        }
        Value::Array(fields) => {
            let mut at = offset;
            for field in fields {
                if let Some(inner) = field.as_array().and_then(|pair| pair.get(1)) {
                    at += big_endian_units(inner, at, out)?;
                }
            }
            Ok(at - offset)
        }
        _ => Ok(0),
    }
}

/// `descr` with every byte order written as little-endian.
fn little_endian(descr: &Value) -> Value {
    match descr {
        Value::String(s) => Value::String(s.replacen('>', "<", 1)),
        Value::Array(items) => Value::Array(items.iter().map(little_endian).collect()),
        other => other.clone(),
    }
}

/// Read `bytes` of data after the header, swapped to little-endian if the file is not.
pub fn read_data(input: &mut impl Read, header: &Header, bytes: u64) -> Result<Vec<u8>> {
    let mut data = vec![0u8; bytes as usize];
    input
        .read_exact(&mut data)
        .map_err(|_| bad("the data is shorter than its shape says"))?;
    swap_bytes(&mut data, header.dtype.itemsize(), &header.big_endian);
    Ok(data)
}

/// The C-order bytes of Fortran-order `data` (an array of `shape`).
pub fn fortran_to_c(data: &[u8], shape: &[u64], itemsize: u64) -> Vec<u8> {
    let itemsize = itemsize as usize;
    let mut out = vec![0u8; data.len()];
    let n: u64 = shape.iter().product();
    let ndim = shape.len();
    let mut index = vec![0u64; ndim];
    for c in 0..n as usize {
        // The element at C position `c` sits at this Fortran position.
        let mut f = 0u64;
        for axis in (0..ndim).rev() {
            f = f * shape[axis] + index[axis];
        }
        let f = f as usize;
        out[c * itemsize..(c + 1) * itemsize]
            .copy_from_slice(&data[f * itemsize..(f + 1) * itemsize]);
        for axis in (0..ndim).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// Write a `.npy` header (version 1, or 2 when it is long) for a C-order array.
pub fn write_header(out: &mut impl Write, dtype: &DType, shape: &[u64]) -> Result<()> {
    let shape_text = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut text = format!(
        "{{'descr': {}, 'fortran_order': False, 'shape': {shape_text}, }}",
        python_descr(&dtype.to_json())
    );
    // Padded with spaces so the data starts on a 64-byte boundary, ending in a newline.
    let fixed = |prefix: usize, text: &str| (prefix + text.len() + 1).div_ceil(64) * 64;
    let (version, prefix) = if fixed(10, &text) - 10 <= u16::MAX as usize {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = fixed(prefix, &text);
    while prefix + text.len() + 1 < total {
        text.push(' ');
    }
    text.push('\n');
    out.write_all(MAGIC)?;
    out.write_all(&[version, 0])?;
    if version == 1 {
        out.write_all(&(text.len() as u16).to_le_bytes())?;
    } else {
        out.write_all(&(text.len() as u32).to_le_bytes())?;
    }
    out.write_all(text.as_bytes())?;
    Ok(())
}

/// A descr as the Python literal a header holds.
fn python_descr(descr: &Value) -> String {
    match descr {
        Value::String(s) => format!("'{s}'"),
        Value::Array(fields) => format!(
            "[{}]",
            fields
                .iter()
                .map(|f| match f {
                    Value::Array(pair) if pair.len() == 2 =>
                        format!("({}, {})", python_descr(&pair[0]), python_descr(&pair[1])),
                    other => python_descr(other),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// The Python literals a header is written in (a dict of strings, booleans, integers, tuples
/// and lists), parsed into JSON values (tuples become lists).
struct Literal<'a> {
    text: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Literal<'a> {
    fn parse(text: &'a str) -> Result<Value> {
        let mut p = Literal {
            text: text.as_bytes(),
            at: 0,
            depth: 0,
        };
        let value = p.value()?;
        p.space();
        if p.at != p.text.len() {
            return Err(bad("text after the header's dict"));
        }
        Ok(value)
    }

    fn space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.text.get(self.at).copied()
    }

    fn value(&mut self) -> Result<Value> {
        self.depth += 1;
        if self.depth > 16 {
            return Err(bad("the header nests too deep"));
        }
        let value = match self.peek() {
            Some(b'{') => self.items(b'}', true)?,
            Some(b'(') => self.items(b')', false)?,
            Some(b'[') => self.items(b']', false)?,
            Some(q @ (b'\'' | b'"')) => {
                self.at += 1;
                let start = self.at;
                while self.at < self.text.len() && self.text[self.at] != q {
                    self.at += 1;
                }
                if self.at >= self.text.len() {
                    return Err(bad("a string in the header does not end"));
                }
                let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                self.at += 1;
                Value::String(s)
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.at < self.text.len() && self.text[self.at].is_ascii_digit() {
                    self.at += 1;
                }
                // NumPy once wrote `3L` for longs.
                if self.text.get(self.at) == Some(&b'L') {
                    self.at += 1;
                }
                let digits = std::str::from_utf8(&self.text[start..self.at])
                    .unwrap_or("")
                    .trim_end_matches('L');
                Value::from(
                    digits
                        .parse::<u64>()
                        .map_err(|_| bad(format!("the number {digits} in the header")))?,
                )
            }
            Some(_) if self.text[self.at..].starts_with(b"True") => {
                self.at += 4;
                Value::Bool(true)
            }
            Some(_) if self.text[self.at..].starts_with(b"False") => {
                self.at += 5;
                Value::Bool(false)
            }
            _ => return Err(bad("the header is not the dict NumPy writes")),
        };
        self.depth -= 1;
        Ok(value)
    }

    /// The items of a dict, tuple or list up to `close`.
    fn items(&mut self, close: u8, dict: bool) -> Result<Value> {
        self.at += 1;
        let mut list = Vec::new();
        let mut map = serde_json::Map::new();
        loop {
            if self.peek() == Some(close) {
                self.at += 1;
                break;
            }
            if dict {
                let Value::String(key) = self.value()? else {
                    return Err(bad("a header key that is not a string"));
                };
                if self.peek() != Some(b':') {
                    return Err(bad("a header key without ':'"));
                }
                self.at += 1;
                map.insert(key, self.value()?);
            } else {
                list.push(self.value()?);
            }
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return Err(bad("the header's lists are not separated by commas")),
            }
        }
        Ok(if dict {
            Value::Object(map)
        } else {
            Value::Array(list)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_numpy_writes_are_read_and_ours_read_back() {
        // As NumPy writes a big-endian, Fortran-order record array's header.
        let dict = "{'descr': [('x', '>f8'), ('tag', '|S3')], 'fortran_order': True, 'shape': (2, 3), }   \n";
        let mut text = b"\x93NUMPY\x01\x00".to_vec();
        text.extend((dict.len() as u16).to_le_bytes());
        text.extend(dict.as_bytes());
        let header = read_header(&mut text.as_slice()).unwrap();
        // Only the big-endian field is swapped.
        assert_eq!(header.big_endian, vec![(0, 8)]);
        assert!(header.fortran_order);
        assert_eq!(header.shape, vec![2, 3]);
        assert_eq!(header.dtype.itemsize(), 11);
        for shape in [vec![], vec![5], vec![2, 3, 4]] {
            let mut out = Vec::new();
            write_header(&mut out, &header.dtype, &shape).unwrap();
            assert_eq!(out.len() % 64, 0);
            let back = read_header(&mut out.as_slice()).unwrap();
            assert_eq!(
                (back.dtype, back.shape, back.fortran_order),
                (header.dtype.clone(), shape, false)
            );
        }
    }

    #[test]
    fn what_is_not_npy_says_so_in_one_line() {
        for (bytes, says) in [
            (&b"PK\x03\x04 a zip file"[..], "\\x93NUMPY"),
            (b"\x93NUMPY\x09\x00", "format version 9"),
            (b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'", "cut short"),
            (b"\x93NUMPY\x01\x00\x0a\x00{'shape': }", "not the dict"),
        ] {
            let err = read_header(&mut &bytes[..]).unwrap_err().to_string();
            assert!(err.contains(says) && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn fortran_order_becomes_c_order() {
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let f = [1u8, 4, 2, 5, 3, 6];
        assert_eq!(fortran_to_c(&f, &[2, 3], 1), vec![1, 2, 3, 4, 5, 6]);
    }
}
