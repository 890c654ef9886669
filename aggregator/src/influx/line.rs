//! Line protocol encoding (sans-IO): a [`Point`] appended to a caller's buffer, one line each.
//!
//! Escaping follows the InfluxDB line protocol reference ("Special characters"):
//! - measurement: commas and spaces;
//! - tag keys, tag values, field keys: commas, equals signs and spaces;
//! - string field values: double quotes and backslashes.
//!
//! Line protocol cannot carry a newline (or carriage return) in any element (InfluxDB 1.6
//! happens to take one inside a string value; the reference says it may not): those are
//! written as spaces. Backslashes are literal in measurements, keys and tag values, but a run
//! of them at the end or right before an escaped character cannot be written so that InfluxDB
//! reads it back (checked against influxd 1.6.7): such a run is dropped. Tags whose key or
//! value is empty are left out (InfluxDB treats a missing tag and an empty one alike and
//! refuses the latter), and so are fields whose key is empty and non-finite floats (line
//! protocol has no NaN or infinity); a point left with no field cannot be written.

use std::borrow::Cow;
use std::io::Write as _;

/// A field key: mostly a static name, sometimes a counter's name.
pub type Key = Cow<'static, str>;

/// One point: measurement, tag set, field set and a time in ns since the Unix epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub measurement: &'static str,
    /// Low-cardinality values only: each distinct tag set is a series.
    pub tags: Vec<(&'static str, String)>,
    pub fields: Vec<(Key, Field)>,
    pub ts_ns: u64,
}

/// A field value.
#[derive(Clone, Debug, PartialEq)]
pub enum Field {
    Int(i64),
    /// Written as a signed integer (`i`; InfluxDB 1.x has no `u` type by default); values above
    /// `i64::MAX` are clamped to it and counted in [`Encoded::clamped`].
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// What encoding one point did besides writing its line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Unsigned values written as `i64::MAX`.
    pub clamped: u32,
    /// Fields left out (non-finite floats).
    pub fields_dropped: u32,
}

/// Why a point has no line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("point of {0} has no writable field")]
    NoFields(&'static str),
}

impl Point {
    pub fn new(measurement: &'static str, ts_ns: u64) -> Point {
        Point {
            measurement,
            tags: Vec::new(),
            fields: Vec::new(),
            ts_ns,
        }
    }

    pub fn tag(mut self, key: &'static str, value: impl Into<String>) -> Point {
        self.tags.push((key, value.into()));
        self
    }

    pub fn field(mut self, key: impl Into<Key>, value: Field) -> Point {
        self.fields.push((key.into(), value));
        self
    }

    /// Appends this point's line (ending in `\n`) to `out`. On error `out` is left as it was.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<Encoded, EncodeError> {
        let start = out.len();
        let mut done = Encoded::default();
        escape(self.measurement, Kind::Measurement, out);
        for (k, v) in &self.tags {
            push_tag(k, v, out);
        }
        let mut sep = b' ';
        for (k, v) in &self.fields {
            if let Field::Float(f) = v {
                if !f.is_finite() {
                    done.fields_dropped += 1;
                    continue;
                }
            }
            let mark = out.len();
            out.push(sep);
            escape(k, Kind::Key, out);
            if out.len() == mark + 1 {
                // Nothing left of the key.
                out.truncate(mark);
                done.fields_dropped += 1;
                continue;
            }
            sep = b',';
            out.push(b'=');
            match v {
                Field::Int(i) => {
                    let _ = write!(out, "{i}i");
                }
                Field::UInt(u) => {
                    let i = i64::try_from(*u).unwrap_or_else(|_| {
                        done.clamped += 1;
                        i64::MAX
                    });
                    let _ = write!(out, "{i}i");
                }
                // Rust's `Display` for f64 is the shortest form that reads back to the same
                // value, never in exponent notation: a valid line protocol float.
                Field::Float(f) => {
                    let _ = write!(out, "{f}");
                }
                Field::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
                Field::Str(s) => {
                    out.push(b'"');
                    escape(s, Kind::StrValue, out);
                    out.push(b'"');
                }
            }
        }
        if sep == b' ' {
            out.truncate(start);
            return Err(EncodeError::NoFields(self.measurement));
        }
        let _ = writeln!(out, " {}", self.ts_ns);
        Ok(done)
    }

    /// The series this point belongs to, as InfluxDB identifies it: the measurement and the
    /// tag set (sorted by key, empty values left out). Two points with the same series and time
    /// are one point to InfluxDB.
    pub fn series_key(&self, out: &mut Vec<u8>) {
        out.clear();
        escape(self.measurement, Kind::Measurement, out);
        let mut tags: Vec<&(&'static str, String)> = self.tags.iter().collect();
        tags.sort_unstable();
        for (k, v) in tags {
            push_tag(k, v, out);
        }
    }
}

/// `,key=value`, or nothing when the key or the value is empty once escaped.
fn push_tag(k: &str, v: &str, out: &mut Vec<u8>) {
    let mark = out.len();
    out.push(b',');
    escape(k, Kind::Key, out);
    let key_end = out.len();
    out.push(b'=');
    escape(v, Kind::Key, out);
    if key_end == mark + 1 || out.len() == key_end + 1 {
        out.truncate(mark);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Measurement,
    /// Tag keys, tag values and field keys.
    Key,
    /// The inside of a double-quoted string field value.
    StrValue,
}

fn escape(s: &str, kind: Kind, out: &mut Vec<u8>) {
    let special = |b: u8| match kind {
        Kind::Measurement => b == b',' || b == b' ' || b == b'\n' || b == b'\r',
        Kind::Key => b == b',' || b == b'=' || b == b' ' || b == b'\n' || b == b'\r',
        Kind::StrValue => b == b'"' || b == b'\\',
    };
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\\' && kind != Kind::StrValue {
            // Backslashes are literal in names and tags, except before a character that is
            // escaped or at the end, where InfluxDB would misread them: those are dropped.
            let run = bytes[i..].iter().take_while(|&&c| c == b'\\').count();
            let next = bytes.get(i + run).copied();
            if next.is_some_and(|n| !special(n)) {
                out.extend_from_slice(&bytes[i..i + run]);
            }
            i += run;
            continue;
        }
        if special(b) {
            out.push(b'\\');
        }
        out.push(if b == b'\n' || b == b'\r' { b' ' } else { b });
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(p: &Point, want: &str) {
        let mut out = b"kept\n".to_vec();
        let r = p.encode(&mut out);
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(String::from_utf8_lossy(&out), format!("kept\n{want}\n"));
    }

    #[test]
    fn escaping_per_element() {
        let cases: &[(&'static str, &'static str, &str, &'static str, &str, &str)] = &[
            // measurement, tag key, tag value, field key, string value, expected line
            ("m", "t", "v", "f", "s", r#"m,t=v f="s" 1"#),
            ("a b,c=d", "t", "v", "f", "s", r#"a\ b\,c=d,t=v f="s" 1"#),
            (
                "m",
                "t k,=",
                "v a,l=ue",
                "f",
                "s",
                r#"m,t\ k\,\==v\ a\,l\=ue f="s" 1"#,
            ),
            ("m", "t", "v", "f k,=", "s", r#"m,t=v f\ k\,\=="s" 1"#),
            (
                "m",
                "t",
                "v",
                "f",
                r#"say "hi" \o/, a=b"#,
                r#"m,t=v f="say \"hi\" \\o/, a=b" 1"#,
            ),
            ("m", "t", "a\"b", "f", "x", r#"m,t=a"b f="x" 1"#),
            (
                "m",
                "t",
                "two\nlines",
                "f",
                "x\ny",
                r#"m,t=two\ lines f="x y" 1"#,
            ),
            (
                "m",
                "t",
                r"c:\dir\",
                "f",
                r"c:\",
                r#"m,t=c:\dir f="c:\\" 1"#,
            ),
            ("m", "t", r"a\\b", "f", "x", r#"m,t=a\\b f="x" 1"#),
            ("m", "t", r"a\\,b\ c", "f", "x", r#"m,t=a\,b\ c f="x" 1"#),
            (r"m\", r"t\", r"\", r"f\", "x", r#"m f="x" 1"#),
            ("m", "t", "é⚡", "f", "ü", "m,t=é⚡ f=\"ü\" 1"),
        ];
        for &(m, tk, tv, fk, fv, want) in cases {
            let p = Point::new(m, 1)
                .tag(tk, tv)
                .field(fk, Field::Str(fv.to_owned()));
            check(&p, want);
        }
    }

    #[test]
    fn field_types() {
        let cases = [
            (Field::Int(-5), "v=-5i"),
            (Field::UInt(7), "v=7i"),
            (Field::UInt(u64::MAX), "v=9223372036854775807i"),
            (Field::Float(1.5), "v=1.5"),
            (Field::Float(2.0), "v=2"),
            (Field::Float(1e300), &format!("v=1{}", "0".repeat(300))),
            (Field::Float(1e-7), "v=0.0000001"),
            (Field::Bool(true), "v=true"),
            (Field::Bool(false), "v=false"),
            (Field::Str(String::new()), "v=\"\""),
        ];
        for (f, want) in cases {
            check(&Point::new("m", 9).field("v", f), &format!("m {want} 9"));
        }
    }

    #[test]
    fn clamps_and_drops_are_counted() {
        let p = Point::new("m", 0)
            .field("a", Field::UInt(u64::MAX))
            .field("b", Field::Float(f64::NAN))
            .field("c", Field::Float(f64::INFINITY))
            .field("d", Field::Int(1));
        let mut out = Vec::new();
        let r = p.encode(&mut out);
        assert_eq!(
            r,
            Ok(Encoded {
                clamped: 1,
                fields_dropped: 2
            })
        );
        assert_eq!(out, b"m a=9223372036854775807i,d=1i 0\n");
    }

    #[test]
    fn no_fields_is_an_error_and_writes_nothing() {
        let mut out = b"x\n".to_vec();
        let p = Point::new("m", 0)
            .tag("t", "v")
            .field("f", Field::Float(f64::NAN));
        assert_eq!(p.encode(&mut out), Err(EncodeError::NoFields("m")));
        assert_eq!(
            Point::new("m", 0).encode(&mut out),
            Err(EncodeError::NoFields("m"))
        );
        assert_eq!(out, b"x\n");
    }

    #[test]
    fn empty_tags_left_out_and_series_key_sorted() {
        let p = Point::new("m", 3)
            .tag("z", "1")
            .tag("e", "")
            .tag("a", "x y")
            .field("f", Field::Int(1));
        check(&p, "m,z=1,a=x\\ y f=1i 3");
        let mut key = Vec::new();
        p.series_key(&mut key);
        assert_eq!(key, b"m,a=x\\ y,z=1");
    }
}
