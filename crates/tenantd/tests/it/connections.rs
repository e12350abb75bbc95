//! The `[server]` connection limits of both listeners, and the HTTP layer's own refusals
//! as problem+json (docs/configuration.md, docs/api.md).
use crate::common::{raw_at, spawn_app, Backend, Node, RawReply, ADMIN};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Whether the server closed `s` within `wait` (EOF or reset), draining what it sent.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One request on an open connection; the status of its answer (read until `needle`).
async fn ask(s: &mut TcpStream, req: &[u8], needle: &[u8]) -> u16 {
    s.write_all(req).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    RawReply::parse(&got).status
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
const OK: &[u8] = b"{\"status\":\"ok\"}";

/// The finding: ~20,000 idle or slow unauthenticated connections exhausted file
/// descriptors, `/healthz` stopped answering, and nothing was closed in 150 s. With 5,000
/// idle and slow connections open at once, `/healthz` and an authenticated request still
/// answer within a second; the slow ones are closed at the header timeout; a keep-alive
/// connection that was served lives to the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_and_slow_connections_do_not_stop_answers() {
    let (db, dir) = tenantd_store::testing::fresh_sqlite();
    let toml = "[server]\nheader_read_timeout_ms = 2000\nidle_timeout_ms = 15000\n";
    let node = Node::spawn(&db, toml, &dir, 0);
    node.ready().await;
    let addr = node.1.trim_start_matches("http://").to_string();

    let opened = Instant::now();
    let mut idle = Vec::new();
    let mut slow = Vec::new();
    for i in 0..5000 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        if i % 2 == 1 {
            // A request line, then a header one byte at a time, never finished.
            s.write_all(b"GET /v1/tenants HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
            slow.push(s);
        } else {
            idle.push(s);
        }
    }
    let drip = tokio::spawn(async move {
        for _ in 0..8 {
            for s in slow.iter_mut() {
                let _ = s.write_all(b"a").await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        slow
    });
    // Everyone else is still answered, within a second.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..3 {
        let h = http
            .get(format!("{}/healthz", node.1))
            .send()
            .await
            .expect("healthz within 1 s");
        assert_eq!(h.status(), 200);
        let t = http
            .get(format!("{}/v1/tenants", node.1))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("an authenticated request within 1 s");
        assert_eq!(t.status(), 200);
    }
    // A connection is served twice, then left idle (not reading a head).
    let mut served = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(ask(&mut served, HEALTHZ, OK).await, 200);
    assert_eq!(ask(&mut served, HEALTHZ, OK).await, 200);
    let idle_from = Instant::now();
    // By the header timeout (2 s, some slack for 5,000 of them), every one is closed.
    let mut slow = drip.await.unwrap();
    let by = opened + Duration::from_millis(6000);
    let mut still_open = 0;
    for s in idle.iter_mut().chain(slow.iter_mut()) {
        if !closed_within(
            s,
            by.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        )
        .await
        {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "connections the header timeout left open");
    // The served keep-alive connection outlived the header timeout; it closes at the
    // idle timeout (15 s).
    assert!(
        idle_from.elapsed() < Duration::from_millis(14000),
        "the check took too long to tell"
    );
    let until_idle = Duration::from_millis(14500).saturating_sub(idle_from.elapsed());
    assert!(
        !closed_within(&mut served, until_idle).await,
        "closed before the idle timeout"
    );
    assert!(
        closed_within(&mut served, Duration::from_millis(4000)).await,
        "not closed at the idle timeout"
    );
    // A new client: the pooled connections above met the same idle timeout.
    let m = reqwest::Client::new()
        .get(format!("{}/metrics", node.1))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let closed = |reason: &str| -> u64 {
        let key = format!("tenantd_connections_closed_total{{listener=\"api\",reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("no {key} in {m}"))
            .parse()
            .unwrap()
    };
    assert!(closed("header_timeout") >= 5000, "{m}");
    assert!(closed("idle") >= 1, "{m}");
}

/// Past `max_connections` the connection idle the longest is closed to make room; when
/// every connection is busy, a new one waits in the backlog until one is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_the_oldest_idle_one_makes_room() {
    let toml = "[server]\nmax_connections = 20\nheader_read_timeout_ms = 30000\n";
    let app = spawn_app(Backend::Sqlite, toml).await.unwrap();
    let addr = app.url.trim_start_matches("http://").to_string();
    let open_now = || app.state.connections.len();
    let settle = |want: usize| async move {
        for _ in 0..200 {
            if open_now() == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} connections open, not {want}", open_now());
    };
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
        settle(idle.len()).await;
    }
    // A 21st: the oldest idle one is closed, and the newcomer is answered at once.
    let mut new = TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    assert_eq!(ask(&mut new, HEALTHZ, OK).await, 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(1)).await,
        "the oldest was closed"
    );
    assert!(
        !closed_within(&mut idle[1], Duration::from_millis(200)).await,
        "the others stay"
    );
    drop((idle, new));
    settle(0).await;

    // Twenty requests in flight (bodies half sent): nothing is idle, so a 21st waits.
    let body = |i: usize| format!("{{\"id\": \"p{i}\", \"name\": \"p{i}\", \"limits\": []}}");
    let mut busy = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/plans HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body(i).len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body(i).as_bytes()[..5]).await.unwrap();
        busy.push(s);
    }
    settle(20).await;
    // Each head read and its service called: none of them is idle.
    for _ in 0..200 {
        if app.state.connections.busy() == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(app.state.connections.busy(), 20);
    let mut waiting = TcpStream::connect(&addr).await.unwrap();
    waiting.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(700), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "no answer while every connection is busy, got {:?}",
        early.map(|n| String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).into_owned())
    );
    // One finishes; its connection, idle now, makes room, and the waiting one is served.
    let first = &mut busy[0];
    first.write_all(&body(0).as_bytes()[5..]).await.unwrap();
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = first.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(RawReply::parse(&got).status, 201);
    let mut answer = Vec::new();
    while !answer.windows(OK.len()).any(|w| w == OK) {
        let n = tokio::time::timeout(Duration::from_secs(1), waiting.read(&mut buf))
            .await
            .expect("served within a second of the room")
            .unwrap();
        assert!(n > 0);
        answer.extend_from_slice(&buf[..n]);
    }
}

/// The finding: 400, 414 and 431 from the HTTP layer had empty bodies, and a
/// `Content-Length` over the limit was read (after `100 Continue`) before the `413`. Each
/// is problem+json, on the API and the gateway alike, and the `413` comes before the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_layers_refusals_are_problem_json_on_both_listeners() {
    let toml = "gateway_listen = \"127.0.0.1:0\"\nupstream = \"http://127.0.0.1:9\"\nmax_body_bytes = 1000\n[gateway]\nmax_body_bytes = 1000\n";
    let app = spawn_app(Backend::Sqlite, toml).await.unwrap();
    let gateway = format!("http://{}", app.state.gateway_addr.unwrap());
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n", "a".repeat(70_000));
    let big_head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n", "b".repeat(200_000));
    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}");
    for url in [&app.url, &gateway] {
        for (head, status, code) in [
            ("GET / HTTP/1.1\r\nHo st: x\r\n".to_string(), 400, "invalid_request"),
            ("NOT-HTTP\r\n".to_string(), 400, "invalid_request"),
            (long_target.clone(), 414, "uri_too_long"),
            (big_head.clone(), 431, "headers_too_large"),
            (many.clone(), 431, "headers_too_large"),
        ] {
            let r = raw_at(url, head.as_bytes(), b"").await;
            let body = r.problem(status, code);
            assert!(body["request_id"].as_str().unwrap().starts_with("req_"), "{body}");
            assert!(r.head.contains("x-request-id: req_"), "{}", r.head);
        }
    }
    // The second request of a keep-alive connection too.
    let mut s = TcpStream::connect(app.url.trim_start_matches("http://")).await.unwrap();
    assert_eq!(ask(&mut s, HEALTHZ, OK).await, 200);
    s.write_all(b"GARBAGE\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    RawReply::parse(&out).problem(400, "invalid_request");
    // A declared body over the limit: 413 at once, no 100 Continue, nothing read.
    for (url, path) in [(&app.url, "/v1/plans"), (&gateway, "/anything")] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n"
        );
        let r = raw_at(url, head.as_bytes(), b"").await;
        assert!(!r.head.contains("100 continue"), "{}", r.head);
        r.problem(413, "payload_too_large");
        assert!(r.head.contains("connection: close"), "{}", r.head);
    }
    let m = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("tenantd_http_refused_total{listener=\"api\"} 6"), "{m}");
    assert!(m.contains("tenantd_http_refused_total{listener=\"gateway\"} 5"), "{m}");
}
