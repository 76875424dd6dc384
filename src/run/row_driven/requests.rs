//! A row-driven table's requests: one input row's first request built from the templates
//! (with its deterministic request id), and its walker started from there or from a
//! recorded page.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;
use url::Url;

use crate::run::cursor;
use crate::run::cursor::Event;
use crate::run::cursor::Shape;
use crate::run::cursor::Start;
use crate::run::cursor::Walk;
use crate::run::cursor::Walkers;
use crate::run::row_driven::FETCH_AHEAD;
use crate::source::rest::Paging;
use crate::source::rest::RestPager;
use crate::source::rest::RestTable;
use crate::source::rows::Templates;
use crate::source::rows::template::Row;

/// The first request of one input row.
pub(crate) struct Built {
    pub(crate) url: Url,
    pub(crate) shape: Arc<Shape>,
    pub(crate) id: String,
}

/// What the table needs to build requests.
pub(crate) struct Requests {
    pub(super) base: Url,
    pub(super) rest: RestTable,
    pub(super) output: String,
    pub(super) method: reqwest::Method,
    pub(super) templates: Templates,
    pub(super) keep: Vec<u16>,
    pub(super) id_header: Option<String>,
    pub(super) secret_param: Option<String>,
    /// The source sends credentials: a next URL on another origin is refused.
    pub(super) credentials: bool,
    /// Requests in flight, across inputs.
    pub(super) permits: Arc<tokio::sync::Semaphore>,
}

impl Requests {
    /// The requests of row-driven table `output` of `source`, `rd.concurrency` in flight.
    pub(crate) fn new(
        source: &crate::source::settings::SourceSettings,
        output: &str,
        rd: &crate::source::rows::RowDriven,
        rest: &RestTable,
        templates: Templates,
    ) -> Self {
        Requests {
            permits: Arc::new(tokio::sync::Semaphore::new(rd.concurrency.max(1) as usize)),
            base: source.base.clone(),
            rest: rest.clone(),
            output: output.to_string(),
            method: rd.method.parse().unwrap_or(reqwest::Method::GET),
            templates,
            keep: rd.record_status.clone(),
            id_header: rd.request_id_header.clone(),
            secret_param: source.secret_param(),
            credentials: source.sends_credentials(),
        }
    }

    /// The cursor of one input row's requests, from its first request (`paging`: the
    /// paginator a resumed run recorded).
    pub(crate) fn pager(&self, b: &Built, paging: Option<Paging>) -> RestPager {
        RestPager::starting_at(
            b.url.clone(),
            &self.output,
            &self.rest,
            paging,
            self.secret_param.clone(),
        )
        .carrying_credentials(self.credentials)
    }

    pub(crate) fn build(&self, columns: &[String], values: &[Value]) -> Result<Built, String> {
        let row = Row { columns, values };
        let f = self.templates.fill(&row)?;
        let (path, params, headers) = (f.path, f.params, f.headers);
        let body = match &f.body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| e.to_string())?),
            None => None,
        };
        let url = crate::source::rest::first_url_at(&self.base, &path, &self.rest, &params);
        let id = cursor::request_id(&self.method, &url, body.as_deref());
        Ok(Built {
            url,
            id,
            shape: Arc::new(Shape {
                method: self.method.clone(),
                headers,
                body,
                keep: self.keep.clone(),
                id_header: self.id_header.clone(),
                permits: Some(Arc::clone(&self.permits)),
            }),
        })
    }

    /// Start the requests of one input row: from its first page, or (resume) after page
    /// `after` whose recorded next URL is `next`.
    pub(super) fn start(
        &self,
        client: &Arc<Client>,
        b: &Built,
        after: u64,
        next: Option<String>,
        paging: Option<Paging>,
    ) -> (Walkers, tokio::sync::mpsc::Receiver<Event>) {
        let pager = self.pager(b, paging);
        let walk = Walk {
            stream: 0,
            pager: Arc::new(pager),
            start: Start {
                page: after,
                cursor: next,
                seen: HashSet::new(),
                columns: None,
            },
            shape: Some(Arc::clone(&b.shape)),
            window: 1,
        };
        cursor::spawn_one(client, walk, FETCH_AHEAD)
    }
}

use crate::http::Client;

/// The first 16 bytes of a hex request id, for the compact set of taken inputs.
pub(super) fn short_id(hex: &str) -> u128 {
    u128::from_str_radix(hex.get(..32).unwrap_or(hex), 16).unwrap_or(0)
}
