//! Running it as a hospital would: keys, CORS, body limits, privacy of logs,
//! graceful shutdown, TLS (key limits and the audit chain: `key_limits_and_audit`).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::{assert_error_shape, status_with, Server};
use serde_json::{json, Value};

#[test]
fn api_keys_guard_every_route_but_health_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, "# ward keys\nfile-key-2\n\n").unwrap();
    let server = Server::start(
        "tiny-gemma3",
        &[
            "--api-key",
            "flag-key-1",
            "--api-key-file",
            key_file.to_str().unwrap(),
        ],
    );
    for path in ["/health", "/ready"] {
        assert_eq!(
            status_with(&server, "GET", path, &[], None).0,
            200,
            "{path} is open"
        );
    }
    for (auth, want) in [
        (None, 401),
        (Some("Bearer nope"), 401),
        (Some("flag-key-1"), 401),
        (Some("Bearer flag-key-1"), 200),
        (Some("Bearer file-key-2"), 200),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let (status, resp) = status_with(&server, "GET", "/v1/models", &headers, None);
        assert_eq!(status, want, "{auth:?}");
        if want == 401 {
            let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            assert_error_shape(&body, "401");
        }
    }
    assert_eq!(status_with(&server, "GET", "/metrics", &[], None).0, 401);
    let chat =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).to_string();
    assert_eq!(
        status_with(&server, "POST", "/v1/chat/completions", &[], Some(&chat)).0,
        401
    );
}

#[test]
fn cors_is_off_by_default_and_follows_the_configured_origins() {
    let preflight = |server: &Server, origin: &str| {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization,content-type",
            ),
        ];
        let (_, resp) = status_with(server, "OPTIONS", "/v1/chat/completions", &headers, None);
        resp.header("access-control-allow-origin").map(String::from)
    };
    let off = Server::start("tiny-gemma3", &[]);
    assert_eq!(preflight(&off, "https://ward.example"), None);
    let on = Server::start(
        "tiny-gemma3",
        &["--cors-origins", "https://ward.example", "--api-key", "k"],
    );
    assert_eq!(
        preflight(&on, "https://ward.example").as_deref(),
        Some("https://ward.example")
    );
    assert_eq!(preflight(&on, "https://evil.example"), None);
}

#[test]
fn bodies_past_the_limit_get_an_openai_413() {
    let server = Server::start("tiny-gemma3", &["--max-body-bytes", "2000"]);
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string();
    let (status, body) = server.post_raw("/v1/chat/completions", &big);
    assert_eq!(status, 413);
    assert_error_shape(&body, "413");
    assert_eq!(server.get("/health").0, 200);
}

/// A unique canary in text and in an image, with logging at trace level: neither
/// it nor the image bytes appear in the logs or the audit log.
#[test]
fn no_content_reaches_the_logs_or_the_audit_log() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = Server::start_with_env(
        "tiny-gemma3",
        &[
            "--audit-log",
            audit.to_str().unwrap(),
            "--api-key",
            "canary-test-key",
            "--log-level",
            "trace",
        ],
        &[],
    );
    let canary = "CANARY-7f3a9c2e-patient-Jane-Doe-MRN-4455";
    let mut png = std::fs::read(common::fixture("images/square.png")).unwrap();
    let image_b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    png.truncate(64);
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": format!("{canary} what is this?")},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image_b64}")}},
    ]}], "max_tokens": 5, "temperature": 0});
    let auth = [
        ("authorization", "Bearer canary-test-key"),
        ("content-type", "application/json"),
    ];
    let (status, resp) = status_with(
        &server,
        "POST",
        "/v1/chat/completions",
        &auth,
        Some(&body.to_string()),
    );
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (status, resp) = status_with(
        &server,
        "POST",
        "/v1/chat/completions",
        &auth,
        Some(&streamed.to_string()),
    );
    assert_eq!(status, 200);
    let _ = resp.into_string();
    let bad = json!({"messages": [{"role": "user", "content": canary}], "temperature": canary});
    assert_eq!(
        status_with(
            &server,
            "POST",
            "/v1/chat/completions",
            &auth,
            Some(&bad.to_string())
        )
        .0,
        400
    );
    let comp = json!({"prompt": canary, "max_tokens": 2});
    assert_eq!(
        status_with(
            &server,
            "POST",
            "/v1/completions",
            &auth,
            Some(&comp.to_string())
        )
        .0,
        200
    );
    // A DICOM file carries the patient's name and ID in its attributes: read or
    // refused, neither reaches a log.
    let dicom = std::fs::read(common::fixture("dicom/ct_implicit.dcm")).unwrap();
    for bytes in [&dicom[..], &dicom[..dicom.len() - 10]] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:application/dicom;base64,{b64}")}},
        ]}], "max_tokens": 2});
        let (status, resp) = status_with(
            &server,
            "POST",
            "/v1/chat/completions",
            &auth,
            Some(&body.to_string()),
        );
        assert!(status == 200 || status == 400, "{status}");
        assert!(!resp.into_string().unwrap().contains("CANARY"));
    }
    std::thread::sleep(Duration::from_millis(200));
    let logs = server.stderr();
    assert!(
        logs.contains("request"),
        "trace logging is on: {}",
        &logs[..logs.len().min(500)]
    );
    let audit_text = std::fs::read_to_string(&audit).unwrap();
    let generated = answer["choices"][0]["message"]["content"].as_str().unwrap();
    for (what, text) in [("logs", &logs), ("audit log", &audit_text)] {
        assert!(!text.contains(canary), "the canary reached the {what}");
        // The tokenizer logs each character it normalizes at trace: capped.
        assert!(
            !text.contains("tokenizers::"),
            "tokenizer traces reached the {what}"
        );
        for phi in ["CANARY^DICOM", "CANARY-ID-0042"] {
            assert!(!text.contains(phi), "a DICOM attribute reached the {what}");
        }
        assert!(
            !text.contains(&image_b64[..40]),
            "image base64 reached the {what}"
        );
        assert!(
            !text.contains("canary-test-key"),
            "the API key reached the {what}"
        );
        let lossy = String::from_utf8_lossy(&png[16..48]).into_owned();
        assert!(!text.contains(&lossy), "image bytes reached the {what}");
        if generated.chars().count() >= 8 {
            assert!(!text.contains(generated), "the answer reached the {what}");
        }
    }
    let lines: Vec<Value> = audit_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "{audit_text}");
    let chat = lines
        .iter()
        .find(|l| l["route"] == "/v1/chat/completions" && l["status"] == 200)
        .unwrap();
    assert!(chat["request_id"].as_str().unwrap().len() > 4);
    assert!(chat["key_id"].as_str().unwrap().starts_with("key-"));
    assert!(
        chat["prompt_tokens"].as_u64().unwrap() > 0
            && chat["completion_tokens"].as_u64().unwrap() > 0
    );
    assert!(lines.iter().any(|l| l["status"] == 400));
}

/// A streaming request on its own connection; `ignore_eos` keeps it generating
/// to `max_tokens` whatever the random model says.
fn start_stream(
    addr: &str,
    max_tokens: usize,
    ignore_eos: bool,
) -> std::thread::JoinHandle<(Vec<String>, Instant)> {
    let addr = addr.to_string();
    std::thread::spawn(move || {
        let body = json!({"messages": [{"role": "user", "content": "Describe the film."}], "max_tokens": max_tokens,
                          "stream": true, "temperature": 0, "ignore_eos": ignore_eos}).to_string();
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        write!(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let lines: Vec<String> = BufReader::new(conn)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.strip_prefix("data: ").map(String::from))
            .collect();
        (lines, Instant::now())
    })
}

fn sigterm(server: &Server) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(server: &mut Server, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < within, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_lets_eight_streams_finish_and_exits_zero() {
    let mut server = Server::start("tiny-gemma3", &["--shutdown-timeout", "20"]);
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let streams: Vec<_> = (0..8).map(|_| start_stream(&addr, 300, false)).collect();
    let start = Instant::now();
    while server.metric("medgemma_running_sequences") < 8.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "streams never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm(&server);
    let signalled = Instant::now();
    for s in streams {
        let (lines, ended) = s.join().unwrap();
        assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
        assert!(
            ended - signalled < Duration::from_secs(20),
            "ended within the grace period"
        );
        let last: Value = serde_json::from_str(&lines[lines.len() - 2]).unwrap();
        let finish = last["choices"][0]["finish_reason"].as_str();
        assert!(
            matches!(finish, Some("length" | "stop")),
            "finished normally: {last}"
        );
    }
    assert!(wait_exit(&mut server, Duration::from_secs(25)).success());
}

#[test]
fn past_the_grace_period_streams_end_with_a_clear_error() {
    let mut server = Server::start(
        "tiny-gemma3",
        &["--shutdown-timeout", "0.05", "--max-num-seqs", "2"],
    );
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let streams: Vec<_> = (0..3).map(|_| start_stream(&addr, 1000, true)).collect();
    let start = Instant::now();
    while server.metric("medgemma_running_sequences") < 2.0 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(5));
    }
    sigterm(&server);
    for s in streams {
        let (lines, _) = s.join().unwrap();
        assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
        let err: Value = serde_json::from_str(&lines[lines.len() - 2]).unwrap();
        assert_eq!(err["error"]["code"], "server_shutdown", "{err}");
    }
    assert!(wait_exit(&mut server, Duration::from_secs(10)).success());
}

/// HTTPS with a certificate generated for the test: curl completes the handshake
/// and trusts it through the generated CA; plain HTTP on the TLS port fails.
#[test]
fn tls_handshake_with_a_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let server = Server::start(
        "tiny-gemma3",
        &[
            "--ssl-certfile",
            cert_path.to_str().unwrap(),
            "--ssl-keyfile",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let port = server.base.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}/health");
    let start = Instant::now();
    let out = loop {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--cacert",
                cert_path.to_str().unwrap(),
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                &url,
            ])
            .output()
            .unwrap();
        if out.status.success() || start.elapsed() > Duration::from_secs(20) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["status"],
        "ok"
    );
    let untrusted = std::process::Command::new("curl")
        .args([
            "-sS",
            &url,
            "--resolve",
            &format!("localhost:{port}:127.0.0.1"),
        ])
        .output()
        .unwrap();
    assert!(
        !untrusted.status.success(),
        "an unknown CA is refused by the client"
    );
    let plain = ureq::get(&format!("http://127.0.0.1:{port}/health"))
        .timeout(Duration::from_secs(5))
        .call();
    assert!(plain.is_err(), "plain HTTP is not served on the TLS port");
}

#[test]
fn a_request_past_the_time_limit_gets_a_504_and_is_freed() {
    let server = Server::start("tiny-gemma3", &["--request-timeout", "0.2"]);
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1000, "ignore_eos": true});
    let (status, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 504, "{resp}");
    assert_error_shape(&resp, "504");
    let start = Instant::now();
    while server.metric("medgemma_running_sequences") != 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the timed-out sequence was never freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Streamed with four choices: one error event for the request, then [DONE].
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1000, "ignore_eos": true, "n": 4, "stream": true, "stream_options": {"include_usage": true}});
    let events = server.stream("/v1/chat/completions", &body);
    let errors: Vec<&String> = events.iter().filter(|e| e.contains("\"error\"")).collect();
    assert_eq!(errors.len(), 1, "{events:?}");
    assert_error_shape(&serde_json::from_str(errors[0]).unwrap(), "streamed 504");
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    assert!(
        !events.iter().any(|e| e.contains("\"usage\":{")),
        "{events:?}"
    );
    while server.metric("medgemma_running_sequences") != 0.0 {
        assert!(start.elapsed() < Duration::from_secs(20), "never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The operator's image limits apply before decoding: past them, 413.
#[test]
fn configured_image_limits_refuse_large_images() {
    use base64::Engine as _;
    let server = Server::start(
        "tiny-gemma3",
        &["--max-image-pixels", "100", "--max-image-bytes", "100000"],
    );
    let png = std::fs::read(common::fixture("images/photo.jpg")).unwrap();
    let url = format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let body = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}], "max_tokens": 1});
    let (status, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 413, "{resp}");
    assert_error_shape(&resp, "pixels");
    let big = vec![0u8; 200_000];
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&big)
    );
    let body = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}], "max_tokens": 1});
    let (status, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 413, "{resp}");
    assert_eq!(server.get("/health").0, 200);
}
