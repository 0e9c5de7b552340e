//! Bad input against the running server: the real `envlink serve --dev` process on
//! 127.0.0.1, over real TLS. Every bad request gets a clear answer (or a closed connection)
//! within the request timeout, the process stays up (a normal review succeeds after each),
//! and memory stays bounded under a burst of oversized bodies.
//!
//! Everything is bounded: every read and write has a deadline, request counts are fixed, and
//! the server process is killed when a test ends, passing or failing.

mod common;
#[path = "support/review.rs"]
mod review;
use review::PodReview;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/review");

/// The server's `--request-timeout` (also its handshake and header timeouts).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);
/// The server's `--max-body-bytes`.
const MAX_BODY: usize = 2 * 1024 * 1024;
/// How long a test waits for any one answer: the request timeout plus generous slack for a
/// loaded 2-core CI machine. A bad request must be answered well within this.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// `envlink serve --dev` on an ephemeral port ([`common::DevServer`]) with this file's body
/// limit and request timeout; killed on drop.
struct Server(common::DevServer);

impl std::ops::Deref for Server {
    type Target = common::DevServer;
    fn deref(&self) -> &common::DevServer {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut common::DevServer {
        &mut self.0
    }
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let timeout = format!("{}ms", REQUEST_TIMEOUT.as_millis());
        let max_body = MAX_BODY.to_string();
        let mut args = vec!["--max-body-bytes", &max_body];
        // A test may give its own request timeout.
        if !extra.contains(&"--request-timeout") {
            args.extend(["--request-timeout", &timeout]);
        }
        args.extend(extra);
        Self(common::DevServer::start(&args, common::envlink_command))
    }

    /// Resident memory of the server process, in KiB.
    fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    async fn connect(&self) -> TlsStream<TcpStream> {
        within(self.tls(b"http/1.1")).await
    }

    /// One request on a new connection: the head (`Content-Length` from `body`), the body,
    /// and the whole answer.
    async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Answer {
        let mut tls = self.connect().await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {content_type}\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        );
        within(tls.write_all(head.as_bytes())).await.expect("write");
        within(tls.write_all(body)).await.expect("write");
        // rustls may still hold the last records of a large body.
        within(tls.flush()).await.expect("flush");
        read_answer(&mut tls).await
    }

    async fn post_json(&self, body: &[u8]) -> Answer {
        self.post("/mutate", "application/json", body).await
    }

    /// A normal review still gets a normal answer.
    async fn assert_serves(&mut self) {
        self.assert_running();
        let answer = self.post_json(&fixture("mutate-pod-create.json")).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let review = answer.json();
        assert_eq!(review["response"]["allowed"], true, "{review}");
        assert_eq!(
            review["response"]["uid"],
            "705ab4f5-6393-11e8-b7cc-42010a800002"
        );
        assert!(review["response"]["patch"].is_string(), "{review}");
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(ANSWER_DEADLINE, future)
        .await
        .expect("no answer within the deadline")
}

#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        format!("{}\n\n{}", self.head, String::from_utf8_lossy(&self.body))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `Status` of an HTTP error: its message.
    fn status_message(&self) -> String {
        let status = self.json();
        assert_eq!(status["kind"], "Status", "{status}");
        assert_eq!(status["code"], self.status, "{status}");
        status["message"].as_str().expect("message").to_string()
    }
}

/// Reads one HTTP/1.1 response (with `Content-Length`, as envlink's always have).
async fn read_answer<S: AsyncReadExt + Unpin>(stream: &mut S) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = within(stream.read(&mut chunk)).await.expect("read");
        assert!(
            n > 0,
            "connection closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = within(stream.read(&mut chunk)).await.expect("read");
        assert!(n > 0, "connection closed inside the body");
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Answer { status, head, body }
}

/// Waits until the peer closes the connection (EOF or reset), discarding what it sends;
/// returns how long that took.
async fn wait_closed<S: AsyncReadExt + Unpin>(stream: &mut S) -> Duration {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    loop {
        match within(stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

fn review_of(object: Value) -> Vec<u8> {
    PodReview::create(&object)
        .uid("00000000-0000-0000-0000-00000000b1d0")
        .to_bytes()
}

fn decoded_patch(review: &Value) -> json_patch::Patch {
    let text = review["response"]["patch"].as_str().expect("a patch");
    let bytes = BASE64_STANDARD.decode(text).expect("base64");
    serde_json::from_slice(&bytes).expect("JSON Patch")
}

#[tokio::test]
async fn malformed_reviews_get_clear_answers_and_the_server_stays_up() {
    let mut server = Server::start(&[]);
    server.assert_serves().await;

    // (body, expected HTTP status, a piece of the message)
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            b"{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": ".to_vec(),
            400,
            "not valid JSON",
        ),
        ("empty body", Vec::new(), 400, "not valid JSON"),
        ("a JSON array", b"[1, 2, 3]".to_vec(), 400, "JSON array"),
        ("a JSON string", b"\"AdmissionReview\"".to_vec(), 400, "JSON string"),
        (
            "an object that is no review",
            b"{\"hello\": \"world\"}".to_vec(),
            400,
            "expected apiVersion",
        ),
        (
            "a review without request",
            fixture("no-request.json"),
            400,
            "no `request`",
        ),
        (
            "a review with request: null",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":null}"
                .to_vec(),
            400,
            "no `request`",
        ),
        (
            "not UTF-8",
            b"{\"apiVersion\": \"\xff\xfe\xfd\"}".to_vec(),
            400,
            "not UTF-8",
        ),
        // Valid JSON (RFC 8259 sets no depth limit); skipped without recursion, so the
        // answer is about its type, not a stack overflow or a recursion-limit error.
        // Decoder messages describe the input, never Rust type names.
        (
            "a request that is an array",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[1,2]}"#
                .to_vec(),
            400,
            "`request` is a JSON array, not an object",
        ),
        (
            "a kind that is a string",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"","kind":"Pod"}}"#
                .to_vec(),
            400,
            "at `request.kind`: invalid type: string \"Pod\", expected an object",
        ),
        (
            "deeply nested JSON",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            400,
            "a JSON array, not an AdmissionReview object",
        ),
        (
            "deeply nested unterminated JSON",
            "[".repeat(100_000).into_bytes(),
            400,
            "not valid JSON",
        ),
    ];
    for (what, body, status, needle) in cases {
        let started = Instant::now();
        let answer = server.post_json(&body).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        let message = answer.status_message();
        assert!(message.contains(needle), "{what}: {message}");
        assert!(message.starts_with("envlink: "), "{what}: {message}");
        for internal in ["expected struct", "borrowed", "IncomingRe"] {
            assert!(!message.contains(internal), "{what}: {message}");
        }
        assert!(
            started.elapsed() < ANSWER_DEADLINE,
            "{what}: answered after {:?}",
            started.elapsed()
        );
        server.assert_serves().await;
    }

    // A uid that can be read is echoed in an AdmissionReview (HTTP 200, allowed: false).
    let mut unknown_version =
        serde_json::from_slice::<Value>(&fixture("mutate-pod-create.json")).expect("fixture JSON");
    unknown_version["apiVersion"] = json!("admission.k8s.io/v2");
    let answer = server
        .post_json(&serde_json::to_vec(&unknown_version).expect("JSON"))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], false);
    assert_eq!(review["response"]["status"]["code"], 400);
    assert_eq!(
        review["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert!(
        review["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("admission.k8s.io/v2")),
        "{review}"
    );
    server.assert_serves().await;

    // The wrong shape inside the request (containers is a string): a readable answer.
    let answer = server
        .post_json(&review_of(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": "all of them"}
        })))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], false, "{review}");
    assert_eq!(review["response"]["status"]["code"], 400, "{review}");
    server.assert_serves().await;

    // Not JSON at all, by Content-Type.
    let answer = server
        .post("/mutate", "application/x-www-form-urlencoded", b"a=b")
        .await;
    assert_eq!(answer.status, 415, "{}", answer.text());
    server.assert_serves().await;

    // Garbage in the services annotation: refused with a reason, never an HTTP error, and
    // the echo of the garbage is bounded.
    let garbage = format!(
        "../../etc/passwd, $(rm -rf /), ,,,, a/b/c, UPPER, {}, {}",
        "x".repeat(10_000),
        "\u{202e}\u{0000}\u{fffd}"
    );
    let answer = server
        .post_json(&review_of(json!({
            "metadata": {"name": "p", "annotations": {"envlink.io/services": garbage}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        })))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], false, "{review}");
    let message = review["response"]["status"]["message"]
        .as_str()
        .expect("message");
    assert!(message.contains("envlink.io/services"), "{message}");
    assert!(
        answer.body.len() < 16 * 1024,
        "the answer repeats {} bytes of garbage",
        answer.body.len()
    );
    server.assert_serves().await;

    // An injection annotation that is neither true nor false.
    let answer = server
        .post_json(&review_of(json!({
            "metadata": {"name": "p", "annotations": {"envlink.io/inject": "maybe\u{0}"}},
            "spec": {"containers": [{"name": "c"}]}
        })))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["response"]["allowed"], false);
    server.assert_serves().await;
}

#[tokio::test]
async fn oversized_and_unfinished_bodies() {
    let mut server = Server::start(&[]);

    // A declared length over the limit: 413 at once, before any of the body is sent.
    let mut tls = server.connect().await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        100 * 1024 * 1024
    );
    let started = Instant::now();
    within(tls.write_all(head.as_bytes())).await.expect("write");
    let answer = read_answer(&mut tls).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    assert!(answer.status_message().contains(&MAX_BODY.to_string()));
    assert!(
        started.elapsed() < REQUEST_TIMEOUT,
        "413 took {:?}: the server waited for the body",
        started.elapsed()
    );
    drop(tls);
    server.assert_serves().await;

    // No declared length (chunked) and more than the limit: 413 once the limit is passed;
    // the rest is never buffered. The writer may find the connection closed: that is fine.
    let tls = server.connect().await;
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    within(writer.write_all(head.as_bytes()))
        .await
        .expect("write");
    let sender = tokio::spawn(async move {
        let chunk = vec![b' '; 64 * 1024];
        let framed = [
            format!("{:x}\r\n", chunk.len()).into_bytes(),
            chunk,
            b"\r\n".to_vec(),
        ]
        .concat();
        // Up to 16 times the limit; stops at the first write error (closed connection).
        for _ in 0..(16 * MAX_BODY / (64 * 1024)) {
            if writer.write_all(&framed).await.is_err() {
                return;
            }
        }
    });
    let answer = read_answer(&mut reader).await;
    assert_eq!(answer.status, 413, "{}", answer.text());
    sender.abort();
    server.assert_serves().await;

    // A body that never finishes: 408 within the request timeout.
    let mut tls = server.connect().await;
    let head = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n{\"apiVersion\": ";
    let started = Instant::now();
    within(tls.write_all(head.as_bytes())).await.expect("write");
    let answer = read_answer(&mut tls).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(answer.status_message().contains("did not arrive"));
    assert!(took >= REQUEST_TIMEOUT, "408 after only {took:?}");
    assert!(took < REQUEST_TIMEOUT * 5, "408 after {took:?}");
    drop(tls);

    // The same, trickling a byte now and then: the deadline is for the whole body.
    let mut tls = server.connect().await;
    let head = "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                Content-Length: 1000\r\n\r\n";
    within(tls.write_all(head.as_bytes())).await.expect("write");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let answer = read_answer(&mut reader).await;
    assert_eq!(answer.status, 408, "{}", answer.text());
    assert!(started.elapsed() < REQUEST_TIMEOUT * 5);
    trickle.abort();
    server.assert_serves().await;
}

#[tokio::test]
async fn slow_headers_and_slow_handshakes_are_cut_off() {
    let mut server = Server::start(&[]);

    // Slowloris on the headers: a header line every 200 ms, never the blank line.
    let mut tls = server.connect().await;
    within(tls.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\n"))
        .await
        .expect("write");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let trickle = tokio::spawn(async move {
        for i in 0..100 {
            if writer
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let took = wait_closed(&mut reader).await;
    assert!(
        took < REQUEST_TIMEOUT * 5,
        "header slowloris held for {took:?}"
    );
    trickle.abort();
    server.assert_serves().await;

    // Slowloris on the TLS handshake: the first bytes of a ClientHello, then nothing.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    within(tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]))
        .await
        .expect("write");
    let took = wait_closed(&mut tcp).await;
    assert!(
        took < REQUEST_TIMEOUT * 5,
        "handshake slowloris held for {took:?}"
    );
    // A connection that sends nothing at all.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    let took = wait_closed(&mut tcp).await;
    assert!(
        took < REQUEST_TIMEOUT * 5,
        "silent connection held for {took:?}"
    );
    // Not TLS at all.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    within(tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .expect("write");
    wait_closed(&mut tcp).await;
    server.assert_serves().await;

    // An idle keep-alive connection after a request is closed too (HTTP/1.1).
    let mut tls = server.connect().await;
    let head = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    within(tls.write_all(head.as_bytes())).await.expect("write");
    let answer = read_answer(&mut tls).await;
    assert_eq!(answer.status, 200);
    let took = wait_closed(&mut tls).await;
    assert!(
        took < REQUEST_TIMEOUT * 5,
        "idle keep-alive held for {took:?}"
    );
    server.assert_serves().await;
}

#[tokio::test]
async fn the_connection_limit_queues_instead_of_failing() {
    let mut server = Server::start(&["--max-connections", "4"]);
    // Four silent connections take every slot until the handshake timeout drops them.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // A fifth client waits in the backlog, then is served once a slot frees up.
    let started = Instant::now();
    server.assert_serves().await;
    assert!(
        started.elapsed() < REQUEST_TIMEOUT * 5,
        "served after {:?}",
        started.elapsed()
    );
    drop(silent);
    server.assert_serves().await;
}

#[tokio::test]
async fn huge_pods_are_answered_correctly_within_the_timeout() {
    // The decision runs under the request timeout too; an unoptimised test build needs more
    // than the 1 s the other tests use for these.
    let mut server = Server::start(&["--request-timeout", "8s"]);

    // Thousands of containers: 2000 × the 49 variables of `shop` is more than envlink ever
    // injects into one Pod (`MAX_INJECTED_ENTRIES`): admitted unchanged, with a warning.
    let wide = |n: usize| {
        let containers: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("c{i}"), "image": "busybox"}))
            .collect();
        json!({"metadata": {"name": "wide"}, "spec": {"containers": containers}})
    };
    let started = Instant::now();
    let answer = server.post_json(&review_of(wide(2000))).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(took < ANSWER_DEADLINE, "2000 containers took {took:?}");
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], true, "{review}");
    assert!(review["response"]["patch"].is_null(), "nothing injected");
    assert!(
        review["response"]["warnings"]
            .to_string()
            .contains("cannot be stored"),
        "{review}"
    );

    // Just under the cap (400 × 49 = 19,600 entries, a ~1 MB patch): every container gets
    // the namespace's variables, in time.
    let pod = wide(400);
    let started = Instant::now();
    let answer = server.post_json(&review_of(pod.clone())).await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(took < ANSWER_DEADLINE, "400 containers took {took:?}");
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let mut patched = pod;
    json_patch::patch(&mut patched, &decoded_patch(&review)).expect("the patch applies");
    for container in patched["spec"]["containers"]
        .as_array()
        .expect("containers")
    {
        let env = container["env"].as_array().expect("env injected");
        assert!(
            env.iter()
                .any(|e| e["name"] == "REDIS_MASTER_SERVICE_HOST" && e["value"] == "10.96.12.7"),
            "{container}"
        );
    }

    // Tens of thousands of env entries in one container (one shadows a reserved name in a
    // container without a GPU, which the default policy refuses).
    let mut env: Vec<Value> = (0..30_000)
        .map(|i| json!({"name": format!("VAR_{i}"), "value": "x"}))
        .collect();
    let pod = json!({"metadata": {"name": "long"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "env": env.clone()}
    ]}});
    let body = review_of(pod.clone());
    assert!(body.len() < MAX_BODY, "{} bytes", body.len());
    let started = Instant::now();
    let answer = server.post_json(&body).await;
    assert!(started.elapsed() < ANSWER_DEADLINE);
    assert_eq!(answer.status, 200, "{}", answer.text());
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], true, "{review}");
    let mut patched = pod;
    json_patch::patch(&mut patched, &decoded_patch(&review)).expect("the patch applies");
    let got = patched["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    // The user's entries are all still there, in order, after the injected ones.
    assert_eq!(&got[got.len() - env.len()..], &env[..]);

    env.push(json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}));
    let answer = server
        .post_json(&review_of(
            json!({"metadata": {"name": "long"}, "spec": {"containers": [
                {"name": "c", "image": "busybox", "env": env}
            ]}}),
        ))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], false, "{review}");
    assert!(
        review["response"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("NVIDIA_VISIBLE_DEVICES")),
        "{review}"
    );
    server.assert_serves().await;
}

#[tokio::test]
async fn memory_stays_bounded_under_a_burst_of_oversized_bodies() {
    let mut server = Server::start(&[]);
    server.assert_serves().await;

    // Oversized bodies without a declared length, so the server has to read up to its limit
    // before refusing: 8 at a time, in rounds.
    async fn burst(server: &Server, rounds: usize) {
        for _ in 0..rounds {
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let tls = server.connect().await;
                tasks.push(tokio::spawn(async move {
                    let (mut reader, mut writer) = tokio::io::split(tls);
                    let head = "POST /validate HTTP/1.1\r\nHost: localhost\r\n\
                                Content-Type: application/json\r\n\
                                Transfer-Encoding: chunked\r\n\r\n";
                    let chunk = vec![b'['; 256 * 1024];
                    let framed = [
                        format!("{:x}\r\n", chunk.len()).into_bytes(),
                        chunk,
                        b"\r\n".to_vec(),
                    ]
                    .concat();
                    let sender = tokio::spawn(async move {
                        if writer.write_all(head.as_bytes()).await.is_err() {
                            return;
                        }
                        for _ in 0..(2 * MAX_BODY / (256 * 1024)) {
                            if writer.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    });
                    let answer = read_answer(&mut reader).await;
                    sender.abort();
                    answer.status
                }));
            }
            for task in tasks {
                assert_eq!(task.await.expect("client task"), 413);
            }
        }
    }

    burst(&server, 2).await;
    let warm = server.rss_kib();
    // 12 rounds of 8 bodies of 4 MiB: 384 MiB sent, at most 8 × 2 MiB buffered at a time.
    burst(&server, 12).await;
    let after = server.rss_kib();
    server.assert_serves().await;
    eprintln!("server VmRSS: {warm} KiB after warm-up, {after} KiB after the burst");
    assert!(
        after < warm + 64 * 1024,
        "VmRSS grew from {warm} KiB to {after} KiB"
    );
    assert!(after < 512 * 1024, "VmRSS {after} KiB");
}
