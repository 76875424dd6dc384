//! Row-driven tables' request side: what a `for_each` table sends (its [`RowDriven`]
//! settings), where its input rows come from ([`inputs`]), and the request templates they fill
//! ([`template`]). The driver that sends the requests and writes what comes back is
//! [`crate::run::row_driven`].
//!
//! Architecture invariant: nothing here sends a request or writes a file; inputs are read,
//! templates are parsed and filled.

pub mod inputs;
pub mod template;

use serde_json::Value;

use self::inputs::InputSpec;
use self::template::{BodyTemplate, Template};

/// The column holding each row's request id.
pub const REQUEST_ID: &str = "_request_id";
/// The column holding the HTTP status of the response a row came from.
pub const STATUS: &str = "_status";
/// Input columns are written as `_input__<column>`.
pub const INPUT_PREFIX: &str = "_input__";
/// The most requests in flight a table may ask for.
pub const MAX_CONCURRENCY: u32 = 256;

/// A row-driven table's settings (beside its [`crate::source::rest::RestTable`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RowDriven {
    pub input: InputSpec,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
    pub concurrency: u32,
    pub request_id_header: Option<String>,
    pub record_status: Vec<u16>,
}

impl RowDriven {
    /// The parsed templates (path, parameters, headers, body).
    pub fn templates(&self, path: &str, params: &[(String, String)]) -> Result<Templates, String> {
        let t = |what: &str, s: &str| Template::parse(s).map_err(|e| format!("{what}: {e}"));
        Ok(Templates {
            path: t("path", path)?,
            params: params
                .iter()
                .map(|(k, v)| Ok((k.clone(), t(&format!("params.{k}"), v)?)))
                .collect::<Result<_, String>>()?,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), t(&format!("headers.{k}"), v)?)))
                .collect::<Result<_, String>>()?,
            body: self
                .body
                .as_ref()
                .map(|b| BodyTemplate::parse(b).map_err(|e| format!("body: {e}")))
                .transpose()?,
        })
    }
}

/// A row-driven table's parsed templates.
pub struct Templates {
    pub path: Template,
    pub params: Vec<(String, Template)>,
    pub headers: Vec<(String, Template)>,
    pub body: Option<BodyTemplate>,
}

/// One input row's request parts, filled from the templates.
pub struct Filled {
    /// The path, its values percent-encoded as path segments.
    pub path: String,
    pub params: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

impl Templates {
    /// Fill every template from `row`; `Err` names the placeholder that cannot be filled.
    pub fn fill(&self, row: &template::Row<'_>) -> Result<Filled, String> {
        let pairs = |list: &[(String, Template)]| {
            list.iter()
                .map(|(k, v)| Ok((k.clone(), v.fill(row, false)?)))
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Filled {
            path: self.path.fill(row, true)?,
            params: pairs(&self.params)?,
            headers: pairs(&self.headers)?,
            body: self.body.as_ref().map(|b| b.fill(row)).transpose()?,
        })
    }

    pub fn slots(&self) -> Vec<(String, &str)> {
        let mut out: Vec<(String, &str)> =
            self.path.slots().map(|s| ("path".to_string(), s)).collect();
        for (k, t) in &self.params {
            out.extend(t.slots().map(|s| (format!("params.{k}"), s)));
        }
        for (k, t) in &self.headers {
            out.extend(t.slots().map(|s| (format!("headers.{k}"), s)));
        }
        if let Some(b) = &self.body {
            out.extend(b.slots().into_iter().map(|s| ("body".to_string(), s)));
        }
        out
    }
}
