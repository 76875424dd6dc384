//! Credentials from the config and the flags: `${VAR}` references read from the environment
//! (a literal secret is refused), basic, bearer, header, query-key and OAuth2 auth.

use crate::cli::HarvestArgs;
use crate::config::AuthConfig;
use crate::config::OAuth2Config;
use crate::config::parse_url;
use crate::error::UsageError;
use crate::http::Auth;

/// `${VAR}` → the variable's value. Anything else is a literal secret and refused.
pub(super) fn secret_from_ref(key: &str, raw: &str) -> Result<String, UsageError> {
    let name = raw
        .strip_prefix("${")
        .and_then(|r| r.strip_suffix('}'))
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let Some(name) = name else {
        return Err(UsageError::with_hint(
            format!(
                "config key `{key}` holds a literal secret; secrets must not be written in config files"
            ),
            format!("put it in an environment variable and write `{key} = \"${{MY_TOKEN}}\"`"),
        ));
    };
    secret_from_env(name, &format!("config key `{key}`"))
}

pub(super) fn secret_from_env(var: &str, wanted_by: &str) -> Result<String, UsageError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => {
            crate::redact::register(&v);
            Ok(v)
        }
        _ => Err(UsageError::with_hint(
            format!("environment variable {var} (needed by {wanted_by}) is not set or empty"),
            format!("export {var}=… before running, or remove the auth setting"),
        )),
    }
}

pub(super) fn auth_from_config(a: &AuthConfig) -> Result<Option<Auth>, UsageError> {
    if let Some(o) = &a.oauth2 {
        let others = [
            &a.bearer,
            &a.user,
            &a.password,
            &a.header,
            &a.query,
            &a.value,
        ];
        if others.iter().any(|v| v.is_some()) {
            return Err(UsageError::new(
                "[source.auth] with `oauth2` takes no other key: the token endpoint supplies the bearer token",
            ));
        }
        return oauth2_from_config(o).map(Some);
    }
    match (&a.bearer, &a.user, &a.password, &a.header, &a.value) {
        (Some(b), None, None, None, None) => {
            Ok(Some(Auth::Bearer(secret_from_ref("auth.bearer", b)?)))
        }
        (None, Some(u), Some(p), None, None) => Ok(Some(Auth::Basic {
            user: u.clone(),
            password: secret_from_ref("auth.password", p)?,
        })),
        (None, None, None, Some(h), Some(v)) if a.query.is_none() => Ok(Some(Auth::Header {
            name: h.clone(),
            value: secret_from_ref("auth.value", v)?,
        })),
        (None, None, None, None, Some(v)) if a.query.is_some() => Ok(Some(Auth::Query {
            name: a.query.clone().unwrap_or_default(),
            value: secret_from_ref("auth.value", v)?,
        })),
        _ => Err(UsageError::with_hint(
            "the [source.auth] table must be exactly one of: bearer; user + password; header + value; query + value; oauth2",
            "e.g. auth = { bearer = \"${DATASETTE_TOKEN}\" }",
        )),
    }
}

pub(super) fn oauth2_from_config(o: &OAuth2Config) -> Result<Auth, UsageError> {
    use crate::http::oauth2::{Grant, OAuth2};
    let token_url = parse_url(&o.token_url, "auth.oauth2.token_url")?;
    let client_secret = o
        .client_secret
        .as_deref()
        .map(|s| secret_from_ref("auth.oauth2.client_secret", s))
        .transpose()?;
    let grant = match o.grant.as_deref().unwrap_or("client_credentials") {
        "client_credentials" => {
            if o.username.is_some() || o.password.is_some() {
                return Err(UsageError::new(
                    "auth.oauth2: `username`/`password` are for grant = \"password\"",
                ));
            }
            if client_secret.is_none() {
                return Err(UsageError::with_hint(
                    "auth.oauth2: the client_credentials grant needs `client_secret`",
                    "client_secret = \"${CLIENT_SECRET}\"",
                ));
            }
            Grant::ClientCredentials
        }
        "password" => match (&o.username, &o.password) {
            (Some(u), Some(p)) => Grant::Password {
                username: u.clone(),
                password: secret_from_ref("auth.oauth2.password", p)?,
            },
            _ => {
                return Err(UsageError::with_hint(
                    "auth.oauth2: the password grant needs `username` and `password`",
                    "username = \"harvest\", password = \"${API_PASSWORD}\"",
                ));
            }
        },
        other => {
            return Err(UsageError::with_hint(
                format!("auth.oauth2: unknown grant {other:?}"),
                "use grant = \"client_credentials\" (the default) or \"password\"",
            ));
        }
    };
    Ok(Auth::OAuth2(std::sync::Arc::new(OAuth2::new(
        token_url,
        grant,
        o.client_id.clone(),
        client_secret,
        o.scopes.clone(),
    ))))
}

pub(super) fn auth_from_flags(args: &HarvestArgs) -> Result<Option<Auth>, UsageError> {
    if let Some(var) = &args.token_env {
        return Ok(Some(Auth::Bearer(secret_from_env(var, "--token-env")?)));
    }
    if let (Some(user), Some(var)) = (&args.basic_user, &args.password_env) {
        return Ok(Some(Auth::Basic {
            user: user.clone(),
            password: secret_from_env(var, "--password-env")?,
        }));
    }
    if let (Some(name), Some(var)) = (&args.auth_header, &args.auth_header_env) {
        return Ok(Some(Auth::Header {
            name: name.clone(),
            value: secret_from_env(var, "--auth-header-env")?,
        }));
    }
    Ok(None)
}
