//! Exit codes and the classification of failures into them (DESIGN.md §"Exit codes").
//!
//! Guarantee: every error that reaches `main` maps to exactly one documented exit code, decided
//! in one place ([`exit_code_for`]) by walking the error's cause chain for a typed marker.

use std::fmt;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    Discrepancies = 3,
    Auth = 4,
    RetryBudget = 5,
    ChecksFailed = 6,
    Interrupted = 130,
}

/// A usage or configuration error (exit 2): bad flag, bad TOML, missing env var, bad SQL.
/// The message names what was wrong; `hint` says what to do.
#[derive(Debug)]
pub struct UsageError {
    pub message: String,
    pub hint: Option<String>,
}

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for UsageError {}

/// The run was interrupted by SIGINT/SIGTERM after writing a clean checkpoint (exit 130).
#[derive(Debug, thiserror::Error)]
#[error("interrupted by {signal}; the output directory is consistent and a rerun resumes")]
pub struct Interrupted {
    pub signal: &'static str,
}

/// Exit 3: discrepancies were found (the report says which).
#[derive(Debug, thiserror::Error)]
#[error("verify found {0} discrepanc{1} in {2}")]
pub struct Discrepancies(pub usize, pub &'static str, pub String);

/// Exit 6: more rows failed their checks than `max_failed` allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "table {output:?}: {failed} of {judged} rows failed their checks ({by_check}), more than max_failed {limit}; the rows written so far and the quarantined ones are recorded (quarantine/{quarantine_dir}/)"
)]
pub struct TooManyFailed {
    pub output: String,
    pub quarantine_dir: String,
    pub failed: u64,
    pub judged: u64,
    pub by_check: String,
    pub limit: String,
}

/// The exit code an object-store error means: refused credentials are exit 4; a request to
/// S3 that failed after the retries (5xx, resets, timeouts, an unreachable endpoint) is
/// exit 5, safe to rerun. Other errors keep the default.
pub fn object_store_exit(e: &object_store::Error) -> Option<Exit> {
    match e {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => Some(Exit::Auth),
        object_store::Error::Generic { store: "S3", .. } => Some(Exit::RetryBudget),
        _ => None,
    }
}

/// Map an error to its exit code by the first typed marker in its cause chain.
pub fn exit_code_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return Exit::Usage;
        }
        if cause.downcast_ref::<Discrepancies>().is_some() {
            return Exit::Discrepancies;
        }
        if cause.downcast_ref::<Interrupted>().is_some() {
            return Exit::Interrupted;
        }
        if cause.downcast_ref::<TooManyFailed>().is_some() {
            return Exit::ChecksFailed;
        }
        if let Some(code) = cause
            .downcast_ref::<object_store::Error>()
            .and_then(object_store_exit)
        {
            return code;
        }
        if let Some(h) = cause.downcast_ref::<crate::http::HttpError>() {
            if h.is_auth() {
                return Exit::Auth;
            }
            if h.is_budget_exhausted() {
                return Exit::RetryBudget;
            }
        }
    }
    Exit::Failure
}

/// What to do about a failure whose own message names only the cause: a refused credential
/// (exit 4) or a server or store that kept failing (exit 5). Usage errors carry their own hint.
pub fn hint_for(err: &anyhow::Error) -> Option<&'static str> {
    match exit_code_for(err) {
        Exit::Auth => Some(
            "check the credentials: the source's `auth` and the environment variables it names \
             (for object storage, the AWS credential chain); nothing was recorded past the \
             last page that was accepted, so a rerun resumes there",
        ),
        Exit::ChecksFailed => Some(
            "read the reasons in the quarantine (`harvest export --dataset NAME --quarantine`); \
             to accept these rows as failed, raise `max_failed` (or --max-failed) and rerun: the \
             run resumes where it stopped; to fetch again after fixing the source, rerun with --restart",
        ),
        Exit::RetryBudget => Some(
            "what was recorded is kept: once the server (or object store) answers again, rerun the \
             same command (`harvest` and `incremental` resume where they stopped); --max-attempts and \
             --retry-budget set how long a run keeps trying",
        ),
        _ => None,
    }
}
