//! RFC 8288 `Link` headers: every link of one or more header values, and the `rel="next"` one.

use reqwest::header::HeaderMap;
use url::Url;

/// The links of one or more RFC 8288 `Link` header values: `(target, rels)` in order.
/// Handles several links per header, quoted and unquoted parameters, commas inside quotes
/// and `rel` values that list several relation types.
pub fn parse_link_header(value: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Find `<target>`.
        let Some(lt) = value[i..].find('<').map(|p| p + i) else {
            break;
        };
        let Some(gt) = value[lt..].find('>').map(|p| p + lt) else {
            break;
        };
        let target = value[lt + 1..gt].trim().to_string();
        i = gt + 1;
        let mut rels = Vec::new();
        // Parameters up to the next comma outside quotes.
        loop {
            while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
                i += 1;
            }
            if i >= b.len() {
                break;
            }
            if b[i] == b',' {
                i += 1;
                break;
            }
            if b[i] != b';' {
                // Garbage: skip to the next link.
                match value[i..].find(',') {
                    Some(p) => i += p + 1,
                    None => i = b.len(),
                }
                break;
            }
            i += 1;
            let name_start = i;
            while i < b.len() && !matches!(b[i], b'=' | b';' | b',') {
                i += 1;
            }
            let name = value[name_start..i].trim().to_ascii_lowercase();
            let mut val = String::new();
            if i < b.len() && b[i] == b'=' {
                i += 1;
                while i < b.len() && b[i] == b' ' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'"' {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' && i + 1 < b.len() {
                            i += 1;
                        }
                        val.push(b[i] as char);
                        i += 1;
                    }
                    i += 1; // closing quote
                } else {
                    let s = i;
                    while i < b.len() && !matches!(b[i], b';' | b',') {
                        i += 1;
                    }
                    val = value[s..i].trim().to_string();
                }
            }
            if name == "rel" {
                rels.extend(val.split_whitespace().map(|r| r.to_ascii_lowercase()));
            }
        }
        out.push((target, rels));
    }
    out
}

/// The `rel="next"` target of the response's `Link` headers, resolved against `url`.
pub(super) fn link_next(headers: &HeaderMap, url: &Url) -> Result<Option<Url>, String> {
    for v in headers.get_all(reqwest::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for (target, rels) in parse_link_header(v) {
            if rels.iter().any(|r| r == "next") {
                return url
                    .join(&target)
                    .map(Some)
                    .map_err(|e| format!("the Link header's next URL {target:?} is invalid: {e}"));
            }
        }
    }
    Ok(None)
}

/// Every link of the response's `Link` headers, `(target, rels)` in order.
pub(super) fn link_rels(headers: &HeaderMap) -> Vec<(String, Vec<String>)> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(parse_link_header)
        .collect()
}
