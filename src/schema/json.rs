//! JSON numbers that JSON cannot spell: Datasette (and SQLite) hold ±Infinity and NaN, which
//! a server may send as the bare tokens `Infinity`, `-Infinity` and `NaN`. A body holding them
//! is parsed with each token replaced by a marker object, and [`non_finite`] reads a marker
//! back as the float it stands for; column typing, watermarks and every source see the same
//! value.

use serde_json::Value;

/// The key of the marker object that stands for a non-finite number in a parsed body.
pub const NON_FINITE_KEY: &str = "$harvest_non_finite";

/// The non-finite float a marker object stands for (`None` for any other value).
pub fn non_finite(v: &Value) -> Option<f64> {
    let Value::Object(m) = v else { return None };
    if m.len() != 1 {
        return None;
    }
    match m.get(NON_FINITE_KEY)?.as_str()? {
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => None,
    }
}

/// `body` with every bare `Infinity`, `-Infinity` and `NaN` token outside strings replaced by a
/// marker object; `None` when it has none. A token must stand where a value can (after `[`,
/// `,` or `:`, and before a delimiter), so `"Infinity"` in a string or `Infinityx` is left as
/// is, and the strict parser still rejects it.
pub fn replace_non_finite_tokens(body: &[u8]) -> Option<Vec<u8>> {
    const TOKENS: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];
    let mut out: Option<Vec<u8>> = None;
    let (mut i, mut copied) = (0, 0);
    let mut in_string = false;
    let mut last_significant = b' ';
    while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
            last_significant = b;
            i += 1;
            continue;
        }
        if matches!(last_significant, b'[' | b',' | b':')
            && let Some(tok) = TOKENS.iter().find(|t| body[i..].starts_with(t))
        {
            let end = i + tok.len();
            let delimited = body
                .get(end)
                .is_none_or(|c| matches!(c, b',' | b']' | b'}') || c.is_ascii_whitespace());
            if delimited {
                let o = out.get_or_insert_with(|| Vec::with_capacity(body.len() + 64));
                o.extend_from_slice(&body[copied..i]);
                o.extend_from_slice(b"{\"");
                o.extend_from_slice(NON_FINITE_KEY.as_bytes());
                o.extend_from_slice(b"\":\"");
                o.extend_from_slice(tok);
                o.extend_from_slice(b"\"}");
                copied = end;
                i = end;
                last_significant = b'}';
                continue;
            }
        }
        if !b.is_ascii_whitespace() {
            last_significant = b;
        }
        i += 1;
    }
    let mut o = out?;
    o.extend_from_slice(&body[copied..]);
    Some(o)
}
