//! Where a request may go: origins compared, redirects followed only within the origin while
//! credentials are sent, and URLs and client errors shown with their secrets redacted.

use url::Url;

/// The query parameters of a URL, for the manifest (values redacted).
pub fn query_params(url: &Url) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in url.query_pairs() {
        m.insert(
            crate::redact::redact(&k).into_owned(),
            serde_json::Value::String(crate::redact::redact(&v).into_owned()),
        );
    }
    m
}

/// Whether two URLs share an origin: scheme, host and port (the default port counted).
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `scheme://host[:port]` of a URL, for messages.
pub fn origin_of(u: &Url) -> String {
    format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

/// What to do when a source with credentials is sent from `from` to another origin `to`.
pub fn left_origin_advice(from: &Url, to: &Url) -> String {
    let fix = "or page by `cursor`, `offset` or `page_number`, which build every URL from the \
               source's `url`";
    if from.scheme() == "https" && to.scheme() == "http" {
        format!(
            "harvest will not send the source's credentials unencrypted (https to http); the \
             server names its pages with http:// (one behind a TLS proxy often does; Datasette \
             needs `force_https_urls`): fix that, {fix}"
        )
    } else {
        format!(
            "harvest does not send the source's credentials there; if it is the API's own \
             address, set the source's `url` to it; if the server names its pages by an inner \
             address (behind a proxy), fix that, {fix}"
        )
    }
}

/// A redirect that would take credentials to another origin.
#[derive(Debug)]
pub(super) struct LeftOrigin {
    pub(super) to: String,
    pub(super) advice: String,
}

impl std::fmt::Display for LeftOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "redirected to another origin: {}", self.to)
    }
}

impl std::error::Error for LeftOrigin {}

/// Follow up to 10 redirects; with credentials, only within the first request's origin.
pub(super) fn redirect_policy(credentials: bool) -> reqwest::redirect::Policy {
    if !credentials {
        return reqwest::redirect::Policy::limited(10);
    }
    reqwest::redirect::Policy::custom(|attempt| {
        let left = attempt
            .previous()
            .first()
            .filter(|first| !same_origin(first, attempt.url()))
            .map(|first| LeftOrigin {
                to: origin_of(attempt.url()),
                advice: left_origin_advice(first, attempt.url()),
            });
        if let Some(left) = left {
            attempt.error(left)
        } else if attempt.previous().len() > 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

/// A URL as shown in logs and the manifest: no user-info, secrets masked.
pub fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    crate::redact::redact(u.as_str()).into_owned()
}

/// reqwest's Display hides the interesting part (reset, refused…) in the source chain.
pub(super) fn describe_reqwest_error(e: &reqwest::Error) -> String {
    let mut parts = vec![];
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p: &String| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    crate::redact::redact(&parts.join(": ")).into_owned()
}
