//! Compressed response bodies: what `harvest` asks for (`Accept-Encoding`) and how a body the
//! server compressed becomes the body it meant.
//!
//! Guarantees:
//! - Only the encodings we ask for are accepted (`gzip`, `br`, `zstd`, and `identity`); a body
//!   in any other encoding is refused with its name, never saved still encoded.
//! - Decoding is bounded: a body that decodes past the byte cap stops at the cap and is refused
//!   (a small compressed body cannot blow up memory).
//! - A compressed stream that ends early is reported as cut off, which the HTTP client retries
//!   like any body cut off mid-transfer; one that is corrupt is also retried (a proxy may have
//!   mangled it), within the same retry budget.
//!
//! reqwest could decode these itself, but then the bytes that crossed the wire are unknown;
//! the manifest records both, so the decoding happens here.

use std::io::Read;

/// The `Accept-Encoding` value sent with every request when compression is on.
pub const ACCEPT: &str = "gzip, br, zstd";

/// Why a body could not be decoded.
#[derive(Debug)]
pub enum DecodeError {
    /// An encoding we did not ask for.
    Unsupported(String),
    /// The decoded body passes the cap.
    TooLarge,
    /// Truncated or corrupt: a retry may help.
    Damaged(String),
}

/// The encodings named by a `Content-Encoding` value, in the order they were applied; empty
/// for `identity` or no header.
pub fn parse(header: Option<&str>) -> Vec<String> {
    header
        .unwrap_or("")
        .split(',')
        .map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty() && e != "identity")
        .collect()
}

/// Undo `encodings` (applied in order, so undone in reverse), producing at most `limit` bytes.
pub fn decode(encodings: &[String], wire: Vec<u8>, limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut body = wire;
    for enc in encodings.iter().rev() {
        body = match enc.as_str() {
            "gzip" | "x-gzip" => read_all(flate2::read::MultiGzDecoder::new(&body[..]), limit)?,
            "br" => read_all(
                brotli_decompressor::Decompressor::new(&body[..], 64 * 1024),
                limit,
            )?,
            "zstd" => {
                let dec = zstd::stream::read::Decoder::new(&body[..])
                    .map_err(|e| DecodeError::Damaged(format!("zstd: {e}")))?;
                read_all(dec, limit)?
            }
            other => return Err(DecodeError::Unsupported(other.to_string())),
        };
    }
    Ok(body)
}

fn read_all(reader: impl Read, limit: u64) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    // One byte past the cap tells "exactly at the cap" from "over it".
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Damaged(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn each_encoding_round_trips() {
        let body = br#"{"rows": [[1, "x"]], "next": null}"#.repeat(50);
        let enc = |e: &str| vec![e.to_string()];
        assert_eq!(decode(&enc("gzip"), gzip(&body), 1 << 20).unwrap(), body);
        let z = zstd::encode_all(&body[..], 3).unwrap();
        assert_eq!(decode(&enc("zstd"), z, 1 << 20).unwrap(), body);
        // A brotli stream made by hand: one uncompressed meta-block (WBITS 16).
        let small = b"hello";
        let br = [0x0b, 0x02, 0x80, b'h', b'e', b'l', b'l', b'o', 0x03];
        assert_eq!(decode(&enc("br"), br.to_vec(), 1 << 20).unwrap(), small);
        assert_eq!(decode(&[], body.clone(), 1 << 20).unwrap(), body);
    }

    #[test]
    fn damage_size_and_unknown_encodings_are_refused() {
        let body = vec![b'a'; 100_000];
        let gz = gzip(&body);
        let enc = vec!["gzip".to_string()];
        assert!(matches!(
            decode(&enc, gz[..gz.len() / 2].to_vec(), 1 << 20),
            Err(DecodeError::Damaged(_))
        ));
        assert!(matches!(
            decode(&enc, gz.clone(), 99_999),
            Err(DecodeError::TooLarge)
        ));
        assert_eq!(decode(&enc, gz, 100_000).unwrap().len(), 100_000);
        assert!(matches!(
            decode(&["compress".to_string()], vec![1], 10),
            Err(DecodeError::Unsupported(_))
        ));
        assert_eq!(parse(Some("gzip, identity")), ["gzip"]);
        assert!(parse(Some("identity")).is_empty() && parse(None).is_empty());
    }
}
