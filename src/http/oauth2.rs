//! OAuth2 access tokens for a source (RFC 6749 §4.3 password and §4.4 client credentials
//! grants), fetched by the HTTP client itself.
//!
//! Guarantees:
//! - One token is fetched when the first request needs it and reused by every request after;
//!   concurrent requests wait for the same fetch rather than each asking for a token.
//! - A token is renewed before it expires (when a tenth of its lifetime is left: at least
//!   1 s, at most 60 s), and once more when a request with it is answered 401 (the server revoked it).
//! - The token, the client secret and the password are registered as secrets: redacted from
//!   every log line, error and manifest record; none is ever written to disk.
//! - A token endpoint that refuses the credentials (400/401/403) is an authentication error
//!   (exit 4) carrying the endpoint's `error`/`error_description`; an unreachable or failing
//!   endpoint (5xx, 429, connection errors) is retried like any request.

use std::time::{Duration, Instant};

use url::Url;

/// How the client proves who it is.
#[derive(Clone)]
pub enum Grant {
    ClientCredentials,
    Password { username: String, password: String },
}

/// A source's OAuth2 settings and its current token.
pub struct OAuth2 {
    pub token_url: Url,
    pub grant: Grant,
    pub client_id: String,
    /// `None`: a public client (password grant), identified by `client_id` in the body.
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    token: tokio::sync::Mutex<Option<Token>>,
}

struct Token {
    value: String,
    /// When to fetch a new one (`None`: the server gave no lifetime; renew only on 401).
    renew_at: Option<Instant>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let grant = match &self.grant {
            Grant::ClientCredentials => "client_credentials".to_string(),
            Grant::Password { username, .. } => format!("password, user {username}"),
        };
        write!(
            f,
            "OAuth2({grant}, {}, client {}, scopes {:?}, [REDACTED])",
            crate::http::display_url(&self.token_url),
            self.client_id,
            self.scopes
        )
    }
}

/// Why no token could be had: retry later, or give up (exit 4).
pub enum TokenError {
    Transient(String),
    Refused { status: u16, detail: String },
}

impl OAuth2 {
    pub fn new(
        token_url: Url,
        grant: Grant,
        client_id: String,
        client_secret: Option<String>,
        scopes: Vec<String>,
    ) -> Self {
        if let Some(s) = &client_secret {
            crate::redact::register(s);
        }
        if let Grant::Password { password, .. } = &grant {
            crate::redact::register(password);
        }
        Self {
            token_url,
            grant,
            client_id,
            client_secret,
            scopes,
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The token to send now: the current one, or a new one when there is none, it is due
    /// for renewal, or `stale` (the token a request was just refused with) is still current.
    pub async fn token(
        &self,
        http: &reqwest::Client,
        stale: Option<&str>,
    ) -> Result<String, TokenError> {
        let mut current = self.token.lock().await;
        let usable = current.as_ref().is_some_and(|t| {
            Some(t.value.as_str()) != stale && t.renew_at.is_none_or(|at| Instant::now() < at)
        });
        if !usable {
            let fresh = self.fetch(http).await?;
            *current = Some(fresh);
        }
        Ok(current
            .as_ref()
            .map(|t| t.value.clone())
            .unwrap_or_default())
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Token, TokenError> {
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            match &self.grant {
                Grant::ClientCredentials => {
                    form.append_pair("grant_type", "client_credentials");
                }
                Grant::Password { username, password } => {
                    form.append_pair("grant_type", "password");
                    form.append_pair("username", username);
                    form.append_pair("password", password);
                }
            }
            if !self.scopes.is_empty() {
                form.append_pair("scope", &self.scopes.join(" "));
            }
            if self.client_secret.is_none() {
                form.append_pair("client_id", &self.client_id);
            }
            form.finish()
        };
        let mut req = http
            .post(self.token_url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body);
        if let Some(secret) = &self.client_secret {
            // RFC 6749 §2.3.1: HTTP Basic with the form-encoded id and secret.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(&self.client_id), Some(enc(secret)));
        }
        let shown = crate::http::display_url(&self.token_url);
        let started = Instant::now();
        let resp = req.send().await.map_err(|e| {
            TokenError::Transient(
                crate::redact::redact(&format!("token request to {shown}: {e}")).into_owned(),
            )
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| {
            TokenError::Transient(format!("token response from {shown} cut off: {e}"))
        })?;
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let text = |k: &str| json.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if !(200..300).contains(&status) {
            let detail = match (text("error"), text("error_description")) {
                (Some(e), Some(d)) => format!("{e}: {d}"),
                (Some(e), None) => e,
                _ => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            };
            let detail = crate::redact::redact(&detail).into_owned();
            return Err(match status {
                408 | 429 | 500..=599 => TokenError::Transient(format!(
                    "the token endpoint {shown} answered {status}: {detail}"
                )),
                _ => TokenError::Refused { status, detail },
            });
        }
        let Some(value) = text("access_token").filter(|t| !t.is_empty()) else {
            return Err(TokenError::Refused {
                status,
                detail: format!("the token endpoint {shown} answered without an access_token"),
            });
        };
        crate::redact::register(&value);
        let lifetime = json
            .get("expires_in")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .map(Duration::from_secs);
        let renew_at = lifetime.map(|l| {
            // A tenth of the lifetime, at least 1 s (servers count in whole seconds, so a
            // token may end up to a second early), at most 60 s, and never half of it.
            let margin = (l / 10)
                .max(Duration::from_secs(1))
                .min(Duration::from_secs(60))
                .min(l / 2);
            started + l.saturating_sub(margin)
        });
        tracing::info!(
            "OAuth2: got an access token from {shown}{}",
            lifetime.map_or(String::new(), |l| format!(", valid for {}s", l.as_secs()))
        );
        Ok(Token { value, renew_at })
    }
}
