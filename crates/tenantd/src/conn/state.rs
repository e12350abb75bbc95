//! One connection's state, shared by its reader, its service and its timer: what it is
//! doing, since when, and whether the head it is reading is one hyper will refuse.
use super::{Limits, MAX_HEADERS, MAX_HEAD_BYTES, MAX_TARGET};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// One connection's state, shared by its reader, its service and its timer.
pub(super) struct Conn {
    state: Mutex<ConnState>,
    /// Wakes the connection's timer: the state changed, or it is evicted.
    pub(super) wake: tokio::sync::Notify,
}

#[derive(Debug)]
struct ConnState {
    opened: Instant,
    /// A request is being served (its service called, its exchange not over).
    active: bool,
    /// The request's body was read to its end (`false` if the handler dropped it unread).
    request_done: bool,
    /// The response's body was sent to its end (or dropped).
    response_done: bool,
    /// Requests served to their end.
    served: u64,
    /// When the last exchange ended (or the connection opened).
    since: Instant,
    /// When the head being read began, if one is.
    head_started: Option<Instant>,
    /// The head read so far, between requests whose bodies were read whole (so what is
    /// read next can only be a head), to tell whether hyper is about to refuse it.
    head: Vec<u8>,
    head_watch: bool,
    /// The head read is one hyper will refuse: its next answer is its own error.
    refusing: bool,
    evicted: bool,
}

impl Conn {
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Self {
            state: Mutex::new(ConnState {
                opened: now,
                active: false,
                request_done: false,
                response_done: false,
                served: 0,
                since: now,
                head_started: None,
                head: Vec::new(),
                head_watch: true,
                refusing: false,
                evicted: false,
            }),
            wake: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request is in flight (its head read, its exchange not over).
    pub(super) fn is_active(&self) -> bool {
        self.lock().active
    }

    /// Since when it is idle (no request in flight), if it is and is not evicted yet.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        let s = self.lock();
        (!s.active && !s.evicted).then_some(s.since)
    }

    /// Marks it for closing; `false` if it already was.
    pub(super) fn evict(&self) -> bool {
        let first = !std::mem::replace(&mut self.lock().evicted, true);
        self.wake.notify_one();
        first
    }

    /// A request head was read whole: its service is called.
    pub(super) fn request_started(&self) {
        let mut s = self.lock();
        s.active = true;
        s.request_done = false;
        s.response_done = false;
        s.head_started = None;
        s.head.clear();
        s.head_watch = false;
        s.refusing = false;
    }

    /// The request body ended (`whole`: read to its end; else dropped unread).
    pub(super) fn request_ended(&self, whole: bool) {
        let mut s = self.lock();
        s.request_done = whole;
        if s.response_done {
            self.exchange_over(s);
        }
    }

    pub(super) fn response_ended(&self) {
        let mut s = self.lock();
        if !s.active {
            return;
        }
        s.response_done = true;
        // A request whose body was dropped unread counts as over for the timers; only
        // the head watch needs it read whole.
        self.exchange_over(s);
    }

    fn exchange_over(&self, mut s: MutexGuard<'_, ConnState>) {
        if !s.active {
            return;
        }
        s.active = false;
        s.served += 1;
        s.since = Instant::now();
        s.head_watch = s.request_done;
        drop(s);
        self.wake.notify_one();
    }

    /// `bytes` arrived from the client.
    pub(super) fn read(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut s = self.lock();
        if s.active {
            return;
        }
        if s.head_started.is_none() {
            s.head_started = Some(Instant::now());
            self.wake.notify_one();
        }
        if !s.head_watch || s.refusing {
            return;
        }
        let room = (MAX_HEAD_BYTES + 1).saturating_sub(s.head.len());
        s.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.contains(&b'\n') || s.head.len() > MAX_HEAD_BYTES {
            s.refusing = hyper_refuses(&s.head);
            if !s.refusing && head_complete(&s.head) {
                s.head_watch = false;
            }
        }
    }

    /// When the connection is to close unless something happens first, and why.
    pub(super) fn deadline(&self, limits: &Limits) -> Option<(Instant, Closed)> {
        let s = self.lock();
        if s.evicted {
            return Some((Instant::now(), Closed::Evicted));
        }
        if s.active {
            return None;
        }
        Some(match (s.head_started, s.served) {
            (Some(at), _) => (at + limits.header_read_timeout, Closed::HeaderTimeout),
            (None, 0) => (s.opened + limits.header_read_timeout, Closed::HeaderTimeout),
            (None, _) => (s.since + limits.idle_timeout, Closed::Idle),
        })
    }

    /// Whether hyper's next write is its own error answer.
    pub(super) fn refusing(&self) -> bool {
        let s = self.lock();
        !s.active && s.refusing
    }
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    HeaderTimeout,
    Idle,
    Evicted,
}

/// Whether hyper refuses this (partial) request head: it does not parse, has too many
/// headers, is larger than hyper reads, or its target is too long. When this guesses
/// wrong nothing happens: a refusal is only acted on if hyper then writes one.
fn hyper_refuses(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => req.path.is_some_and(|p| p.len() >= MAX_TARGET),
        Ok(httparse::Status::Partial) => head.len() > MAX_HEAD_BYTES,
        Err(_) => true,
    }
}

fn head_complete(head: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    matches!(
        httparse::Request::new(&mut headers).parse(head),
        Ok(httparse::Status::Complete(_))
    )
}
