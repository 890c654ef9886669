//! JSON string contents for the hand-written JSON lines (conn, interim and alerts logs).
//!
//! Strings that came from the wire (uids, history, community ids, processor and collector
//! names) must not end a string, a record or a line early, nor carry terminal escapes into
//! a log a person reads. [`push_escaped`] writes a string's contents escaped as JSON requires
//! (`"`, `\` and control characters), and also escapes DEL and the C1 controls (U+0080 to
//! U+009F, where a terminal's CSI lives). The strings tapflow makes itself are printable
//! ASCII without `"` or `\`: they take the fast path and are written as they are, so valid
//! input gives the same bytes as before.

/// Appends `s` as the contents of a JSON string (without the quotes).
#[inline]
pub fn push_escaped(s: &str, out: &mut String) {
    // No early exit: the compiler checks 16 or 32 bytes at a time (strings are short).
    let special = s.bytes().fold(false, |any, b| any | !plain(b));
    if special {
        escape(s, out);
    } else {
        out.push_str(s);
    }
}

/// Printable ASCII that JSON takes as it is.
#[inline]
fn plain(b: u8) -> bool {
    (b.wrapping_sub(0x20) < 0x5f) & (b != b'"') & (b != b'\\')
}

#[cold]
fn escape(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                // Controls are all below U+0100: `\u00XX`.
                let n = u32::from(c);
                out.push_str("\\u00");
                out.push(char::from(HEX[((n >> 4) & 0xf) as usize]));
                out.push(char::from(HEX[(n & 0xf) as usize]));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, want: &str) {
        let mut out = String::new();
        push_escaped(input, &mut out);
        assert_eq!(out, want, "{input:?}");
        let quoted = format!("\"{out}\"");
        let back: String = serde_json::from_str(&quoted).expect("reading the escaped string back");
        assert_eq!(back, input);
    }

    #[test]
    fn escapes_what_json_and_terminals_need() {
        check("CHhAvVGS1DHFjwGM9", "CHhAvVGS1DHFjwGM9");
        check(
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            "1:wCb3OG7yAFWelaUydu0D+125CLM=",
        );
        check(
            "10.0.0.1:80 <-> [::1]:9 proto 6",
            "10.0.0.1:80 <-> [::1]:9 proto 6",
        );
        check("", "");
        check("a\"b\\c\nd\re\tf", "a\\\"b\\\\c\\nd\\re\\tf");
        check("C\u{18}x", "C\\u0018x");
        check("Sh\u{1b}[31m", "Sh\\u001b[31m");
        check("\u{7f}\u{9b}2J", "\\u007f\\u009b2J");
        check("café ü", "café ü");
    }
}
