//! hyper's configuration, and the answer to each request: the paths, the statuses, the
//! watch stream and the hang.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioTimer;
use tokio::time::{Interval, MissedTickBehavior};

use super::Behaviour;
use super::deadline::Deadline;

/// Longest request head (request line and headers) accepted; longer gets 431.
pub(super) const MAX_REQUEST_HEAD: usize = 8 * 1024;
/// hyper's buffers, each way: room for the longest head, and a bound on what a connection
/// holds (hyper's default is ~400 KiB).
const MAX_BUFFER: usize = 2 * MAX_REQUEST_HEAD;

/// hyper's HTTP/1.1 server as the stand-in runs it: one request per connection (closed
/// after the answer, as the old hand-written server did and as probes expect), the request
/// head within `header_timeout` and [`MAX_REQUEST_HEAD`], header names in Title-Case as
/// kube-apiserver (Go) writes them.
pub(super) fn builder(header_timeout: Duration) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(MAX_REQUEST_HEAD)
        .max_buf_size(MAX_BUFFER)
        .keep_alive(false)
        .title_case_headers(true);
    http
}

/// An answer's body: whole, or a watch's stream.
pub(super) type AnswerBody = Either<Full<Bytes>, Watch>;

/// What a connection's request is answered with.
#[derive(Debug, Clone)]
pub(super) struct Exchange {
    /// The server's name.
    pub(super) name: Arc<str>,
    /// The client's address as the server sees it.
    pub(super) peer: IpAddr,
    /// The address the client reached (`None`: unknown).
    pub(super) local: Option<IpAddr>,
    pub(super) behaviour: Behaviour,
    /// How often a watch sends an event.
    pub(super) watch_every: Duration,
    /// The connection's deadline, which a watch pushes back and a hang lifts.
    pub(super) deadline: Deadline,
    /// How long a watch may wait for its client to take the next event.
    pub(super) patience: Duration,
}

impl Exchange {
    /// The answer to `request` (never, hung).
    pub(super) async fn answer(&self, request: &Request<Incoming>) -> Response<AnswerBody> {
        if self.behaviour == Behaviour::Hang {
            // Held until the client gives up: hyper ends the connection when it reads the
            // client's end of stream.
            self.deadline.lift();
            return std::future::pending().await;
        }
        let uri = request.uri();
        // Origin form (`/path?query`) or absolute form (`https://host/path`); not the
        // authority form (`host:port`, CONNECT's) nor `*` (OPTIONS').
        if !uri.path().starts_with('/') {
            return plain(StatusCode::BAD_REQUEST, "bad request target\n");
        }
        if request.method() != Method::GET {
            let mut answer = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
            answer.headers_mut().insert(ALLOW, HeaderValue::from_static("GET"));
            return answer;
        }
        if is_watch(uri.query()) {
            return self.watch();
        }
        // kube-apiserver accepts query parameters on /healthz (e.g. `?verbose`).
        match uri.path() {
            "/healthz" => plain(StatusCode::OK, "ok"),
            // Who answered, the client as this server sees it and the address it was
            // reached at (with direct routing: the client's own address and the VIP).
            "/whoami" => {
                let local = self.local.map_or_else(|| "?".to_owned(), |ip| ip.to_string());
                plain(StatusCode::OK, format!("{} {} {local}\n", self.name, self.peer))
            }
            _ => plain(StatusCode::OK, format!("{}\n", self.name)),
        }
    }

    /// 200 and a stream of events: kube-apiserver's answer to a watch, which lasts until
    /// the client goes away (its connection is closed after it).
    fn watch(&self) -> Response<AnswerBody> {
        let mut tick = tokio::time::interval(self.watch_every);
        // A client slow to read gets the next event when it is ready, not a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let events =
            Watch { tick, sent: 0, deadline: self.deadline.clone(), patience: self.patience };
        let mut answer = Response::new(Either::Right(events));
        answer.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        answer.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        answer
    }
}

/// Whether a query asks for a watch: `watch=true` or `watch=1` among its parameters.
fn is_watch(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| matches!(p, "watch=true" | "watch=1")))
}

/// A plain-text answer, its connection closed after it.
fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<AnswerBody> {
    let mut answer = Response::new(Either::Left(Full::new(body.into())));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    answer
}

/// A watch's events: `{"type":"MODIFIED","n":N}` lines, one every `watch_every`
/// (the first at once), without end. hyper asks for the next once it has written the last,
/// so each one sent pushes the connection's deadline back: a client that stops reading is
/// dropped after the server's patience, one that stays is served for ever.
#[derive(Debug)]
pub(super) struct Watch {
    tick: Interval,
    sent: u64,
    deadline: Deadline,
    patience: Duration,
}

impl Body for Watch {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        ready!(self.tick.poll_tick(cx));
        let event = format!("{{\"type\":\"MODIFIED\",\"n\":{}}}\n", self.sent);
        self.sent += 1;
        self.deadline.push_back(self.patience);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_asked_in_the_query() {
        for yes in ["watch=true", "watch=1", "labelSelector=a&watch=true&resourceVersion=5"] {
            assert!(is_watch(Some(yes)), "{yes}");
        }
        for no in ["", "watch=false", "watch=0", "watcher=true", "nowatch=true", "watch"] {
            assert!(!is_watch(Some(no)), "{no}");
        }
        assert!(!is_watch(None));
    }
}
