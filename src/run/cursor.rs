//! Cursor walkers: background tasks that follow one table's cursor (whatever [`Pager`] reads
//! it) and hand each parsed page to the table pipeline over a bounded channel.
//!
//! Guarantees:
//! - Fetching runs ahead of the writer by at most the channel's capacity, so the server is
//!   already working on page N+1 while page N is being made durable, and memory stays bounded
//!   (a few pages per cursor, never a table). A body is accepted once the pager's scan finds it
//!   complete and of the right shape with a readable next cursor (a cut-off body is retried);
//!   its rows are built on the blocking pool while the next request is already out.
//! - Pages of one cursor arrive in order; every page is numbered from the cursor's last
//!   recorded page, and carries the URL and the cursor it was fetched with.
//! - A cursor the walker has followed before is reported after its page is delivered (the
//!   writer records the page, then stops), so a pagination loop never runs on.
//! - A walker stops on the first failure and reports it; nothing is written here. Dropping the
//!   [`Walkers`] handle aborts every walker, so an abandoned request never outlives its run.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use url::Url;

use crate::http::{Client, Fetched, HttpError};
use crate::source::{Page, Pager, Scanned, verdict};

/// Where a cursor starts: after its last recorded page.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// The last page already recorded (0: none), so the next is `page + 1`.
    pub page: u64,
    /// The token to continue with (`None` with `page == 0`: the first page).
    pub cursor: Option<String>,
    /// Every token already followed, to keep the repeated-token guard across a resume.
    pub seen: HashSet<String>,
    /// Column names for bodies that do not list them (1.0 object rows).
    pub columns: Option<Vec<String>>,
}

/// One fetched page: its body checked (complete JSON of the right shape, `next` read) and its
/// rows being parsed on the blocking pool while the cursor already asks for the next page.
#[derive(Debug)]
pub struct FetchedPage {
    pub stream: usize,
    pub page_no: u64,
    pub url: Url,
    pub cursor_in: Option<String>,
    pub fetched: Fetched,
    /// How the source paged (a REST source's resolved paginator), for the manifest.
    pub paging: Option<serde_json::Value>,
    /// A shaped (row-driven) request's id ([`request_id`]).
    pub request_id: Option<String>,
    /// A paged request other than a GET: its method and body, for the manifest.
    pub sent: Option<Sent>,
    pub parsed: JoinHandle<Result<Page, String>>,
}

/// A paged request sent with another method than GET (a search paging in its body).
#[derive(Debug, Clone)]
pub struct Sent {
    pub method: String,
    /// The sha256 (hex) of the request body as sent, cursor included.
    pub body_sha256: Option<String>,
}

/// What a walker reports.
#[derive(Debug)]
pub enum Event {
    Page(Box<FetchedPage>),
    /// The walker stopped; `error` is an [`HttpError`] or a pagination problem.
    Failed {
        stream: usize,
        page_no: u64,
        error: anyhow::Error,
    },
}

/// One cursor to walk.
pub struct Walk {
    pub stream: usize,
    pub pager: Arc<dyn Pager>,
    pub start: Start,
    /// How to send each request (`None`: a plain GET).
    pub shape: Option<Arc<Shape>>,
    /// Pages in flight at once (1: one after another); above 1 only pages whose cursor the
    /// pager can predict are fetched ahead ([`Pager::predict`]).
    pub window: usize,
}

/// A row-driven request's method, headers, body and kept statuses, the same for every page
/// of one input row.
#[derive(Debug, Clone)]
pub struct Shape {
    pub method: reqwest::Method,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    /// Non-2xx statuses recorded as responses (see [`crate::http::Request::keep`]).
    pub keep: Vec<u16>,
    /// Send each request's id (see [`request_id`]) in this header.
    pub id_header: Option<String>,
    /// Requests in flight across all inputs: each request (with its retries) holds a permit.
    pub permits: Option<Arc<tokio::sync::Semaphore>>,
}

/// The request id: the sha256 (hex) of the method, a newline, the URL as sent (without a
/// query-parameter API key), a newline, and the body bytes (none for a request without one).
pub fn request_id(method: &reqwest::Method, url: &Url, body: Option<&[u8]>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(url.as_str().as_bytes());
    h.update(b"\n");
    h.update(body.unwrap_or_default());
    crate::store::manifest::hex(&h.finalize())
}

/// The running walkers of one table; dropping it aborts them.
pub struct Walkers {
    handles: Vec<JoinHandle<()>>,
}

impl Drop for Walkers {
    fn drop(&mut self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

/// Start one walker with a channel of its own holding at most `ahead` pages.
pub fn spawn_one(client: &Arc<Client>, w: Walk, ahead: usize) -> (Walkers, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    let handles = vec![tokio::spawn(walk(Arc::clone(client), w, tx))];
    (Walkers { handles }, rx)
}

/// Start one walker per cursor. Pages arrive on the returned receiver; the channel holds at
/// most `ahead` pages per walker.
pub fn spawn(
    client: &Arc<Client>,
    walks: Vec<Walk>,
    ahead: usize,
) -> (Walkers, mpsc::Receiver<Event>) {
    let (tx, rx) = mpsc::channel(ahead.max(1) * walks.len().max(1));
    let handles = walks
        .into_iter()
        .map(|w| tokio::spawn(walk(Arc::clone(client), w, tx.clone())))
        .collect();
    (Walkers { handles }, rx)
}

async fn walk(client: Arc<Client>, w: Walk, tx: mpsc::Sender<Event>) {
    let stream = w.stream;
    if let Err((page_no, error)) = walk_pages(&client, w, &tx).await {
        let _ = tx
            .send(Event::Failed {
                stream,
                page_no,
                error,
            })
            .await;
    }
}

/// One page's request and response, checked, its rows being built on the blocking pool.
pub(crate) struct Fetch {
    url: Url,
    pub(crate) fetched: Fetched,
    pub(crate) next: Option<String>,
    columns: Option<Vec<String>>,
    pub(crate) paging: Option<serde_json::Value>,
    id: Option<String>,
    sent: Option<Sent>,
    pub(crate) parsed: JoinHandle<Result<Page, String>>,
}

/// Request page `page_no` with `cursor` and check its body (also `harvest plan`'s page 1).
pub(crate) async fn fetch_page(
    client: &Client,
    pager: &dyn Pager,
    shape: Option<&Shape>,
    page_no: u64,
    cursor: Option<&str>,
    known: Option<&[String]>,
) -> anyhow::Result<Fetch> {
    let page_req = pager.request(page_no, cursor)?;
    let url = page_req.url.clone();
    let validate = |f: &Fetched| {
        if (200..300).contains(&f.status) {
            verdict(pager.scan(page_no, &url, cursor, f, known))
        } else {
            // A kept error status (a row-driven 404): recorded as it came, no rows, last.
            crate::http::Verdict::Accept(Scanned {
                next: None,
                columns: None,
                paging: None,
                work: Box::new(|| Ok(Page::default())),
            })
        }
    };
    // A shaped (row-driven) request's id: sent as a header when asked, and handed on.
    let id = shape.map(|sh| request_id(&sh.method, &url, sh.body.as_deref()));
    // A paged request with a body (a search paging in its body), for the manifest.
    let sent = (shape.is_none() && page_req.method != reqwest::Method::GET).then(|| Sent {
        method: page_req.method.to_string(),
        body_sha256: page_req
            .body
            .as_deref()
            .map(crate::store::manifest::sha256_hex),
    });
    let result = match (shape, &id) {
        (Some(sh), Some(id)) => {
            let mut headers = sh.headers.clone();
            headers.extend(page_req.headers.iter().cloned());
            if let Some(name) = &sh.id_header {
                headers.push((name.clone(), id.clone()));
            }
            let req = crate::http::Request {
                method: sh.method.clone(),
                url: &url,
                headers: &headers,
                body: sh.body.as_deref(),
                keep: &sh.keep,
            };
            let _permit = match &sh.permits {
                Some(p) => Some(p.acquire().await?),
                None => None,
            };
            client.send(&req, validate).await
        }
        _ => {
            let req = crate::http::Request {
                method: page_req.method.clone(),
                url: &url,
                headers: &page_req.headers,
                body: page_req.body.as_deref(),
                keep: &[],
            };
            client.send(&req, validate).await
        }
    };
    let (fetched, scanned) = result.map_err(anyhow::Error::new::<HttpError>)?;
    // Building the rows is the costly part of reading a page: do it off the cursor's path.
    let parsed = tokio::task::spawn_blocking(scanned.work);
    Ok(Fetch {
        url,
        fetched,
        next: scanned.next,
        columns: scanned.columns,
        paging: scanned.paging,
        id,
        sent,
        parsed,
    })
}

/// A page requested ahead: its task is aborted when dropped (a guess that turned out wrong,
/// or a walker that stopped).
struct Ahead {
    page_no: u64,
    cursor: Option<String>,
    task: JoinHandle<anyhow::Result<Fetch>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follow the cursor to its end; `Err` names the page that failed and why.
///
/// With a window above 1 and a pager that can predict the next cursor, up to `window` pages
/// are in flight: after the page at the front of the queue comes back, its real next cursor
/// is compared with the one the next queued page was requested with; a match keeps the
/// queue, a mismatch (a short page, a window's end) drops it and starts again from the real
/// cursor. So pages reach the writer in order and exactly as a one-at-a-time walk finds
/// them; a guess past the end is never delivered.
async fn walk_pages(
    client: &Arc<Client>,
    w: Walk,
    tx: &mpsc::Sender<Event>,
) -> Result<(), (u64, anyhow::Error)> {
    let Walk {
        stream,
        pager,
        start,
        shape,
        window,
    } = w;
    let Start {
        page: mut page_no,
        mut cursor,
        mut seen,
        mut columns,
    } = start;
    let mut queue: std::collections::VecDeque<Ahead> = std::collections::VecDeque::new();
    // Guesses start once this walk has seen a response (its total, its resolved paginator).
    let mut answered = false;
    loop {
        page_no += 1;
        let f = if window <= 1 {
            fetch_page(
                client,
                pager.as_ref(),
                shape.as_deref(),
                page_no,
                cursor.as_deref(),
                columns.as_deref(),
            )
            .await
        } else {
            if queue.is_empty() {
                queue.push_back(spawn_fetch(
                    client, &pager, &shape, page_no, &cursor, &columns,
                ));
            }
            while answered && queue.len() < window {
                let Some(last) = queue.back() else { break };
                let Some(guess) = pager.predict(last.page_no, last.cursor.as_deref()) else {
                    break;
                };
                let no = last.page_no + 1;
                queue.push_back(spawn_fetch(
                    client,
                    &pager,
                    &shape,
                    no,
                    &Some(guess),
                    &columns,
                ));
            }
            let Some(mut front) = queue.pop_front() else {
                unreachable!("the queue holds the page to fetch")
            };
            debug_assert_eq!(front.page_no, page_no);
            match (&mut front.task).await {
                Ok(r) => r,
                Err(e) => Err(anyhow::anyhow!("the page fetch stopped: {e}")),
            }
        };
        let f = f.map_err(|e| (page_no, e))?;
        answered = true;
        if f.columns.is_some() {
            columns.clone_from(&f.columns);
        }
        let next = f.next;
        let repeated = next.as_ref().is_some_and(|t| !seen.insert(t.clone()));
        let msg = FetchedPage {
            stream,
            page_no,
            url: f.url,
            cursor_in: cursor.take(),
            fetched: f.fetched,
            paging: f.paging,
            request_id: f.id,
            sent: f.sent,
            parsed: f.parsed,
        };
        if tx.send(Event::Page(Box::new(msg))).await.is_err() {
            return Ok(()); // the writer stopped
        }
        match next {
            None => return Ok(()),
            Some(tok) if repeated => {
                return Err((page_no, anyhow::anyhow!(pager.repeated(&tok, page_no))));
            }
            Some(tok) => {
                // The page fetched ahead is the next page only if its guess was right.
                if queue
                    .front()
                    .is_some_and(|a| a.cursor.as_deref() != Some(tok.as_str()))
                {
                    queue.clear();
                }
                cursor = Some(tok);
            }
        }
    }
}

/// Start fetching page `page_no` at `cursor` on its own task.
fn spawn_fetch(
    client: &Arc<Client>,
    pager: &Arc<dyn Pager>,
    shape: &Option<Arc<Shape>>,
    page_no: u64,
    cursor: &Option<String>,
    columns: &Option<Vec<String>>,
) -> Ahead {
    let (client, pager, shape) = (Arc::clone(client), Arc::clone(pager), shape.clone());
    let (c, known) = (cursor.clone(), columns.clone());
    let task = tokio::spawn(async move {
        fetch_page(
            &client,
            pager.as_ref(),
            shape.as_deref(),
            page_no,
            c.as_deref(),
            known.as_deref(),
        )
        .await
    });
    Ahead {
        page_no,
        cursor: cursor.clone(),
        task,
    }
}
