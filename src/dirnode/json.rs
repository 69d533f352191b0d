//! JSON as Python's `json` module reads and writes it, for directory entry metadata.
//!
//! Tahoe stores each entry's metadata as `json.dumps(metadata)`, and an immutable directory's cap is the hash of its
//! packed bytes, so writing must match Python byte for byte: `", "` and `": "` separators, keys in insertion order,
//! non-ASCII escaped as lowercase `\uXXXX`, floats as `repr(float)`, and `NaN`/`Infinity`, which Python accepts and
//! writes. Reading follows `json.loads`: a repeated key keeps its first position and its last value, integers are
//! arbitrary precision. The text comes from servers, so nesting, integer digits and total size are bounded; the
//! only JSON Python accepts that this rejects is a string holding an unpaired UTF-16 surrogate.

use std::fmt::Write as _;
use thiserror::Error;

/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 64;
/// Most digits in an integer: Python 3.11's default `int_max_str_digits`, beyond which `json.loads` fails too.
pub const MAX_INT_DIGITS: usize = 4300;

/// A JSON value with objects in insertion order, as a Python `dict` holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    /// An integer, as canonical decimal digits (an optional `-`, no leading zeros): Python's ints are unbounded.
    Int(String),
    Float(f64),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

/// A JSON object: keys in insertion order, each once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(Vec<(String, Json)>);

impl Object {
    pub fn new() -> Object {
        Object::default()
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Json> {
        self.0.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`, keeping its place if present and appending it otherwise (a Python `dict` assignment).
    pub fn insert(&mut self, key: impl Into<String>, value: Json) {
        let key = key.into();
        match self.get_mut(&key) {
            Some(slot) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Json> {
        let index = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(index).1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Json)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Json {
    /// The number as a float, for ints and floats alike (Tahoe's timestamps may be either).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Float(f) => Some(*f),
            Json::Int(digits) => digits.parse().ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// An integer value from a Rust integer.
    pub fn int(value: i64) -> Json {
        Json::Int(value.to_string())
    }

    /// Python's truth value: false, null, zero, and empty strings, arrays and objects are false.
    pub fn is_truthy(&self) -> bool {
        match self {
            Json::Null => false,
            Json::Bool(b) => *b,
            Json::Int(digits) => digits != "0",
            Json::Float(f) => *f != 0.0,
            Json::String(s) => !s.is_empty(),
            Json::Array(a) => !a.is_empty(),
            Json::Object(o) => !o.is_empty(),
        }
    }

    /// The text `json.dumps` writes for this value.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        write_value(&mut out, self);
        out
    }
}

/// Why bytes are not JSON `json.loads` would accept. `offset` is a byte offset into the JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid JSON at byte {offset}: {problem}")]
pub struct JsonError {
    pub offset: usize,
    pub problem: String,
}

/// Parses `text` as `json.loads` does (UTF-8 only).
pub fn loads(text: &[u8]) -> Result<Json, JsonError> {
    let text = std::str::from_utf8(text).map_err(|e| JsonError {
        offset: e.valid_up_to(),
        problem: "not UTF-8".into(),
    })?;
    let mut parser = Parser {
        text: text.as_bytes(),
        source: text,
        pos: 0,
    };
    parser.skip_whitespace();
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != parser.text.len() {
        return Err(parser.error("extra data after the value"));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a [u8],
    source: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, problem: &str) -> JsonError {
        JsonError {
            offset: self.pos,
            problem: problem.into(),
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.text.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.text[self.pos..].starts_with(literal.as_bytes()) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, JsonError> {
        match self.text.get(self.pos) {
            None => Err(self.error("expected a value, found the end")),
            Some(b'{') | Some(b'[') if depth >= MAX_DEPTH => Err(self.error(&format!(
                "nested deeper than {MAX_DEPTH} arrays and objects"
            ))),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(_) if self.eat("null") => Ok(Json::Null),
            Some(_) if self.eat("true") => Ok(Json::Bool(true)),
            Some(_) if self.eat("false") => Ok(Json::Bool(false)),
            Some(_) if self.eat("NaN") => Ok(Json::Float(f64::NAN)),
            Some(_) if self.eat("Infinity") => Ok(Json::Float(f64::INFINITY)),
            Some(_) if self.eat("-Infinity") => Ok(Json::Float(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        let mut object = Object::new();
        self.skip_whitespace();
        if self.eat("}") {
            return Ok(Json::Object(object));
        }
        loop {
            self.skip_whitespace();
            if self.text.get(self.pos) != Some(&b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if !self.eat(":") {
                return Err(self.error("expected ':' after a key"));
            }
            self.skip_whitespace();
            let value = self.value(depth + 1)?;
            // A repeated key keeps its first position and takes the last value, as dict(pairs) does.
            object.insert(key, value);
            self.skip_whitespace();
            if self.eat("}") {
                return Ok(Json::Object(object));
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or '}' in an object"));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, JsonError> {
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat("]") {
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            if self.eat("]") {
                return Ok(Json::Array(items));
            }
            if !self.eat(",") {
                return Err(self.error("expected ',' or ']' in an array"));
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.text.get(self.pos), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// Python's number pattern: `-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`; a fraction or exponent makes a float.
    fn number(&mut self) -> Result<Json, JsonError> {
        let start = self.pos;
        self.eat("-");
        let int_start = self.pos;
        if !self.eat("0") && self.digits() == 0 {
            return Err(self.error("expected digits"));
        }
        let int_end = self.pos;
        let mut is_float = false;
        let before_fraction = self.pos;
        if self.eat(".") {
            if self.digits() == 0 {
                // Python stops the number before a '.' with no digit after it; what follows is then extra data.
                self.pos = before_fraction;
            } else {
                is_float = true;
            }
        }
        let before_exponent = self.pos;
        if self.eat("e") || self.eat("E") {
            let _signed = self.eat("+") || self.eat("-");
            if self.digits() == 0 {
                self.pos = before_exponent;
            } else {
                is_float = true;
            }
        }
        let text = &self.source[start..self.pos];
        if is_float {
            let value: f64 = text.parse().map_err(|_| JsonError {
                offset: start,
                problem: "bad number".into(),
            })?;
            return Ok(Json::Float(value));
        }
        let digits = &self.source[int_start..int_end];
        if digits.len() > MAX_INT_DIGITS {
            return Err(JsonError {
                offset: start,
                problem: format!("an integer of more than {MAX_INT_DIGITS} digits"),
            });
        }
        let negative = start != int_start && digits != "0";
        Ok(Json::Int(if negative {
            format!("-{digits}")
        } else {
            digits.to_owned()
        }))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("bad \\u escape"))?;
        self.pos += 4;
        Ok(u32::from_str_radix(hex, 16).expect("four hex digits"))
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let run_start = self.pos;
            while let Some(&b) = self.text.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.source[run_start..self.pos]);
            match self.text.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let escape = *self
                        .text
                        .get(self.pos)
                        .ok_or_else(|| self.error("unterminated string"))?;
                    self.pos += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => {
                            self.pos -= 2;
                            return Err(self.error("invalid escape"));
                        }
                    }
                }
                Some(_) => return Err(self.error("control character in a string")),
            }
        }
    }

    /// After `\u`: a character, joining a surrogate pair written as two escapes.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let unit = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&unit) && self.text[self.pos..].starts_with(b"\\u")
        {
            let saved = self.pos;
            self.pos += 2;
            let low = self.hex4()?;
            if (0xdc00..0xe000).contains(&low) {
                0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00)
            } else {
                self.pos = saved;
                unit
            }
        } else {
            unit
        };
        char::from_u32(code).ok_or_else(|| self.error("unpaired UTF-16 surrogate in a \\u escape"))
    }
}

fn write_value(out: &mut String, value: &Json) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Int(digits) => out.push_str(digits),
        Json::Float(f) => out.push_str(&python_float_repr(*f)),
        Json::String(s) => write_string(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Json::Object(object) => {
            out.push('{');
            for (i, (key, item)) in object.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_string(out, key);
                out.push_str(": ");
                write_value(out, item);
            }
            out.push('}');
        }
    }
}

/// A string as `json.dumps` writes it with `ensure_ascii`: only printable ASCII stays as is.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String");
                }
            }
        }
    }
    out.push('"');
}

/// `repr(float)`: the shortest digits that read back as the same float, in fixed notation for exponents from -4
/// to 15 (with `.0` if there is no fraction) and scientific notation with a signed two-digit exponent otherwise.
pub fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` finds how many digits the shortest round-trip form needs, but where two such forms are equally
    // close it may pick the other one than Python, which rounds half to even; exact formatting to that many digits
    // rounds half to even too.
    let shortest = format!("{:e}", value.abs());
    let significant = shortest
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    let scientific = format!("{:.*e}", significant.saturating_sub(1), value.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("{:e} output has an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0".to_owned(),
        trimmed => trimmed.to_owned(),
    };
    let sign = if value.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let fraction = if digits.len() > 1 {
            format!(".{}", &digits[1..])
        } else {
            String::new()
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{}{fraction}e{exp_sign}{:02}",
            &digits[..1],
            exponent.unsigned_abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_as_python_repr() {
        for (value, text) in [
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1700000000.25, "1700000000.25"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.5e-7, "1.5e-07"),
            (1.2345e100, "1.2345e+100"),
            (123.456, "123.456"),
            // Exactly halfway between two shortest forms: Python rounds half to even.
            (1700000291.0 + 420.0 / 1024.0, "1700000291.4101562"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(python_float_repr(value), text);
        }
    }

    #[test]
    fn dumps_like_python() {
        let value =
            loads(br#"{"b": [1, 2.5, "\u00e9\ud83d\ude00\n"], "a": {}, "b": null}"#).unwrap();
        assert_eq!(value.dumps(), r#"{"b": null, "a": {}}"#);
        let value = loads("[\"é\u{7f}\", -0, 1E2, true]".as_bytes()).unwrap();
        assert_eq!(value.dumps(), r#"["\u00e9\u007f", 0, 100.0, true]"#);
    }

    #[test]
    fn rejects_what_python_rejects_and_bounds_nesting() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"01",
            b"1.",
            b"\"\x01\"",
            b"\"\\x\"",
            b"{1: 2}",
            b"\"\\ud800\"",
            b"\xff",
            b"",
        ] {
            assert!(loads(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(
            loads(deep.as_bytes())
                .unwrap_err()
                .problem
                .contains("nested")
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(loads(ok.as_bytes()).is_ok());
        let long = "9".repeat(MAX_INT_DIGITS + 1);
        assert!(loads(long.as_bytes()).is_err());
    }
}
