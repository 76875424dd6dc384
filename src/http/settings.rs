//! What the client is told: a source's credentials ([`Auth`], registered for redaction when
//! used) and the timeouts, retry budget, rate limit and caps of [`HttpSettings`].

use std::time::Duration;

/// Credentials for a source. Values are secrets and are redacted everywhere.
#[derive(Clone)]
pub enum Auth {
    Bearer(String),
    Basic {
        user: String,
        password: String,
    },
    Header {
        name: String,
        value: String,
    },
    /// An API key sent as a query parameter; added to each request, never to a recorded URL.
    Query {
        name: String,
        value: String,
    },
    /// A bearer token from an OAuth2 token endpoint, fetched and renewed by the client.
    OAuth2(std::sync::Arc<crate::http::oauth2::OAuth2>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Bearer(_) => f.write_str("Bearer([REDACTED])"),
            Auth::Basic { user, .. } => write!(f, "Basic({user}, [REDACTED])"),
            Auth::Header { name, .. } => write!(f, "Header({name}: [REDACTED])"),
            Auth::Query { name, .. } => write!(f, "Query({name}=[REDACTED])"),
            Auth::OAuth2(o) => write!(f, "{o:?}"),
        }
    }
}

impl Auth {
    pub(super) fn register_secrets(&self) {
        match self {
            Auth::Bearer(t) => crate::redact::register(t),
            Auth::Basic { user, password } => {
                crate::redact::register(password);
                use base64::Engine as _;
                let b =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                crate::redact::register(&b);
            }
            Auth::Header { value, .. } | Auth::Query { value, .. } => {
                crate::redact::register(value);
                // As it appears in a URL's query, too.
                let encoded: String =
                    url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
                crate::redact::register(&encoded);
            }
            // Registered when read from the environment, and each token when it arrives.
            Auth::OAuth2(_) => {}
        }
    }
}

/// Resolved HTTP settings (from flags and config).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub stall_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Total time a run may spend on failed attempts and waits before giving up.
    pub retry_budget: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// Client-side limit, requests per second.
    pub rate_limit: Option<f64>,
    pub max_body_bytes: u64,
    /// Ask for compressed bodies (`Accept-Encoding`, see [`crate::http::content_encoding`]).
    pub compression: bool,
    /// HTTP/1.1 only, also with an HTTPS server that offers HTTP/2.
    pub http1_only: bool,
    pub auth: Option<Auth>,
    /// Headers sent with every request (a source's `headers`).
    pub headers: Vec<(String, String)>,
    /// Requests carry a secret (`auth` or a `${VAR}` header): redirects stay in the origin.
    pub credentials: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            stall_timeout: Duration::from_secs(30),
            max_attempts: 8,
            retry_budget: Duration::from_secs(900),
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(60),
            rate_limit: None,
            max_body_bytes: 256 * 1024 * 1024,
            compression: true,
            http1_only: false,
            auth: None,
            headers: Vec::new(),
            credentials: false,
        }
    }
}
