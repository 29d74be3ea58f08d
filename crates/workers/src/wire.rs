//! What crosses between a node and a worker process, over the worker's stdin and stdout.
//! `python/tern/worker.py` is the other end; keep the two in step.
//!
//! Every message is a run of frames, each a 4-byte big-endian length and that many bytes.
//! A task is: the function (opaque: for Python, `cloudpickle.dumps((fn, kwargs))`), the
//! number of inputs (4 bytes, big-endian), then one frame per input. Its answer is one frame.
//! An input or an answer frame starts with a tag:
//!
//! | tag | what follows | as a tern value |
//! |---|---|---|
//! | `p` | a pickle | `Value::Bytes` (what the Python package makes of any Python object) |
//! | `a` | an Arrow IPC stream | `Datum::Table` (a pandas DataFrame in Python) |
//! | `j` | JSON: null, a boolean, a number, a string, or a list of those | the other `Value`s |
//! | `e` | answers only: the error, UTF-8 (for Python, the exception and its traceback) | |

use std::io::{Read, Write};

use tern_proto::{Datum, Value};

/// The largest frame a worker may answer with (a task's output is kept like a block).
pub const MAX_FRAME: usize = tern_proto::MAX_BLOCK_BYTES as usize;

pub fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a frame past 4 GiB"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// One frame, refusing one past `limit` bytes before reading it.
pub fn read_frame(input: &mut impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes, past the limit of {limit}"),
        ));
    }
    let mut bytes = vec![0u8; len];
    input.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A task's whole request.
pub fn encode_task(function: &[u8], inputs: &[Datum]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let io = |e: std::io::Error| e.to_string();
    write_frame(&mut out, function).map_err(io)?;
    write_frame(&mut out, &(inputs.len() as u32).to_be_bytes()).map_err(io)?;
    for input in inputs {
        write_frame(&mut out, &encode_input(input)?).map_err(io)?;
    }
    Ok(out)
}

fn encode_input(input: &Datum) -> Result<Vec<u8>, String> {
    Ok(match input {
        Datum::Table(bytes) => [b"a".as_slice(), bytes.as_ref()].concat(),
        Datum::Value(Value::Bytes(pickle)) => [b"p".as_slice(), pickle].concat(),
        Datum::Value(value) => {
            let mut text = b"j".to_vec();
            json(value, &mut text)?;
            text
        }
        // A task reads one part (`Arg::Part`), never the parts together.
        Datum::Parts(parts) => {
            return Err(format!(
                "{} parts as one input: a Python task reads one part at a time",
                parts.len()
            ));
        }
    })
}

/// `value` as JSON; non-finite floats as `NaN`, `Infinity`, `-Infinity`, which Python's
/// `json` reads.
fn json(value: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
        Value::Float(f) if f.is_infinite() => {
            out.extend_from_slice(if *f > 0.0 { b"Infinity" } else { b"-Infinity" })
        }
        // `{:?}` keeps a float a float (`1.0`, not `1`).
        Value::Float(f) => out.extend_from_slice(format!("{f:?}").as_bytes()),
        Value::Str(s) => {
            out.push(b'"');
            for c in s.chars() {
                match c {
                    '"' => out.extend_from_slice(b"\\\""),
                    '\\' => out.extend_from_slice(b"\\\\"),
                    c if (c as u32) < 0x20 => {
                        out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
                    }
                    c => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            out.push(b'"');
        }
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json(item, out)?;
            }
            out.push(b']');
        }
        Value::Bytes(_) => {
            return Err("a list holding bytes cannot go to a Python function".into());
        }
    }
    Ok(())
}

/// What a worker answered: the output, or the error it raised.
pub fn decode_answer(frame: &[u8]) -> Result<Result<Datum, String>, String> {
    let (tag, rest) = frame
        .split_first()
        .ok_or_else(|| "an empty answer".to_string())?;
    Ok(match tag {
        b'a' => Ok(Datum::Table(bytes::Bytes::copy_from_slice(rest))),
        b'p' => Ok(Datum::Value(Value::Bytes(rest.to_vec()))),
        b'j' => Ok(Datum::Value(parse_json(rest)?)),
        b'e' => Err(String::from_utf8_lossy(rest).into_owned()),
        other => return Err(format!("an answer tagged {:?}", *other as char)),
    })
}

/// The JSON the worker sends for plain values: a number, a string, a boolean, null (lists
/// travel as pickles).
fn parse_json(text: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(text).map_err(|e| e.to_string())?.trim();
    Ok(match text {
        "null" => Value::Null,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        t if t.starts_with('"') => Value::Str(unquote(t)?),
        t => match t.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Float(
                t.parse::<f64>()
                    .map_err(|_| format!("unreadable JSON from a worker: {t:.40}"))?,
            ),
        },
    })
}

fn unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or("an unterminated string")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next().ok_or("a string ending in a backslash")? {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16).map_err(|e| e.to_string())?;
                // Surrogate pairs: the worker sends non-ASCII as UTF-8 (ensure_ascii=False).
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_frames_and_answers_decode_by_tag() {
        let inputs = vec![
            Datum::Value(Value::List(vec![
                Value::Int(-3),
                Value::Float(1.0),
                Value::Float(f64::NAN),
                Value::Str("a \"q\"\n\u{1}é".into()),
                Value::Null,
                Value::Bool(true),
            ])),
            Datum::Table(vec![1, 2, 3].into()),
            Datum::Value(Value::Bytes(vec![0x80, 5])),
        ];
        let task = encode_task(b"fn", &inputs).unwrap();
        let mut read = task.as_slice();
        assert_eq!(read_frame(&mut read, 100).unwrap(), b"fn");
        assert_eq!(read_frame(&mut read, 100).unwrap(), 3u32.to_be_bytes());
        let first = read_frame(&mut read, 100).unwrap();
        assert_eq!(
            String::from_utf8(first).unwrap(),
            "j[-3,1.0,NaN,\"a \\\"q\\\"\\u000a\\u0001é\",null,true]"
        );
        assert_eq!(read_frame(&mut read, 100).unwrap(), b"a\x01\x02\x03");
        assert_eq!(read_frame(&mut read, 100).unwrap(), b"p\x80\x05");
        assert!(read.is_empty());

        assert_eq!(
            decode_answer(b"j42").unwrap(),
            Ok(Datum::Value(Value::Int(42)))
        );
        assert_eq!(
            decode_answer(b"j2.5").unwrap(),
            Ok(Datum::Value(Value::Float(2.5)))
        );
        assert_eq!(
            decode_answer("j\"h\\u00e9\\n\"".as_bytes()).unwrap(),
            Ok(Datum::Value(Value::Str("hé\n".into())))
        );
        assert_eq!(
            decode_answer(b"eValueError: no").unwrap(),
            Err("ValueError: no".into())
        );
        assert!(decode_answer(b"x").is_err());
        assert!(decode_answer(b"").is_err());
        assert!(read_frame(&mut [0u8, 0, 1, 0].as_slice(), 10).is_err());
    }
}
