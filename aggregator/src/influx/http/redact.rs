//! What of an InfluxDB error body may reach a log line: the JSON `error` (v1) or `message` (v2)
//! field when there is one, with every credential redacted (anything after `Basic `, `Token `
//! or `Bearer `, and the configured password, token and their encodings, which a proxy or a
//! debugging server may echo), control characters turned into spaces, at most
//! [`MAX_CHARS`] characters.

/// The longest excerpt of an error body kept.
pub(crate) const MAX_CHARS: usize = 200;

const REDACTED: &str = "<redacted>";

/// The loggable excerpt of `body`, with each of `secrets` (non-empty ones) redacted.
pub(crate) fn error_excerpt(body: &str, secrets: &[String]) -> String {
    let text = json_message(body).unwrap_or_else(|| body.to_owned());
    let mut text = redact_schemes(&text);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(s.as_str(), REDACTED);
    }
    let mut out = String::with_capacity(text.len().min(4 * MAX_CHARS));
    for c in text.chars().take(MAX_CHARS) {
        out.push(if c.is_control() { ' ' } else { c });
    }
    out.trim().to_owned()
}

/// The `error` (InfluxDB 1.x) or `message` (2.x) string of a JSON object body.
fn json_message(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    ["error", "message"]
        .into_iter()
        .find_map(|k| v.get(k)?.as_str().map(str::to_owned))
}

/// `text` with the word after each `Basic `, `Token ` or `Bearer ` (any case) replaced.
fn redact_schemes(text: &str) -> String {
    const SCHEMES: [&str; 3] = ["basic", "token", "bearer"];
    // ASCII lowercasing keeps every byte offset.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let at_word = i == 0 || !text.as_bytes()[i - 1].is_ascii_alphanumeric();
        let scheme = SCHEMES
            .into_iter()
            .find(|s| at_word && lower[i..].starts_with(s));
        if let Some(s) = scheme {
            let after = i + s.len();
            let spaces = text[after..].len() - text[after..].trim_start_matches([' ', '\t']).len();
            if spaces > 0 {
                let start = after + spaces;
                let len = text[start..]
                    .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\x27' | ',' | ';'))
                    .unwrap_or(text.len() - start);
                if len > 0 {
                    out.push_str(&text[i..start]);
                    out.push_str(REDACTED);
                    i = start + len;
                    continue;
                }
            }
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8().max(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, secrets: &[&str], want: &str) {
        let secrets: Vec<String> = secrets.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(error_excerpt(body, &secrets), want, "{body:?}");
    }

    #[test]
    fn error_bodies_are_cut_and_redacted() {
        check(
            r#"{"error":"partial write: field type conflict"}"#,
            &[],
            "partial write: field type conflict",
        );
        check(
            r#"{"code":"unauthorized","message":"unauthorized access"}"#,
            &[],
            "unauthorized access",
        );
        check(
            "you sent Authorization: Basic dTpTM2NyZXQ=\r\nbye",
            &[],
            "you sent Authorization: Basic <redacted>  bye",
        );
        check("token: Token s3cr3t-T0ken.", &[], "token: Token <redacted>");
        check(
            "bearer abc, and TOKEN\tx",
            &[],
            "bearer <redacted>, and TOKEN\t<redacted>"
                .replace('\t', " ")
                .as_str(),
        );
        check(
            "the password is hunter2!",
            &["hunter2"],
            "the password is <redacted>!",
        );
        check("Basicity and tokens stay", &[], "Basicity and tokens stay");
        check("é\u{1b}[31mred", &[], "é [31mred");
        let long = "x".repeat(1000);
        assert_eq!(error_excerpt(&long, &[]).len(), MAX_CHARS);
    }
}
