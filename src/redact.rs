//! Redaction of credentials by value.
//!
//! Guarantee: every secret registered here (tokens, passwords, auth header values) is replaced
//! by `[REDACTED]` in every string that passes through [`redact`] — which every log line, error
//! message and manifest record does before it is written anywhere.

use std::borrow::Cow;
use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

pub const MASK: &str = "[REDACTED]";

/// Remember a secret value so that it is masked from now on.
pub fn register(secret: &str) {
    if secret.is_empty() {
        return;
    }
    if let Ok(mut s) = SECRETS.write()
        && !s.iter().any(|x| x == secret)
    {
        s.push(secret.to_string());
        // Longest first, so a secret containing another is masked whole.
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// `text` with every registered secret masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    let Ok(secrets) = SECRETS.read() else {
        return Cow::Borrowed(text);
    };
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_values() {
        register("s3cr3t-token-xyz");
        assert_eq!(redact("Bearer s3cr3t-token-xyz!"), "Bearer [REDACTED]!");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)));
    }
}
