//! API keys as an operator sets them up: per-key limits and queue priority from
//! the key file, refusals of a bad key file, and the chained audit log.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::{status_with, Server};
use serde_json::{json, Value};

/// `serve` with this key file and `extra` flags must refuse to start: its stderr.
fn refused_start(keys: &std::path::Path, extra: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medgemma-server"))
        .args(["serve", "--model"])
        .arg(common::fixture("tiny-gemma3"))
        .args(["--port", "0"])
        .args(extra)
        .arg("--api-key-file")
        .arg(keys)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Per-key limits from the key file: a key at its concurrency limit gets 429s
/// while its stream runs (other keys do not), and a key past its rate waits as
/// Retry-After says.
#[test]
fn per_key_limits_refuse_with_429_and_spare_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(
        &keys,
        "# ward tools\nkey-one max_concurrent=1\nkey-two requests_per_minute=2\n",
    )
    .unwrap();
    let server = Server::start("tiny-gemma3", &["--api-key-file", keys.to_str().unwrap()]);
    let ask = |key: &str| {
        let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
        let auth = format!("Bearer {key}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let (status, resp) = status_with(
            &server,
            "POST",
            "/v1/chat/completions",
            &headers,
            Some(&body.to_string()),
        );
        let retry = resp.header("retry-after").map(String::from);
        // A limited key's answers keep their length (the body is only wrapped).
        assert!(status != 200 || resp.header("content-length").is_some());
        let body: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
        (status, retry, body)
    };
    // key-one's stream holds its only place until the stream ends.
    let addr = server
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let body = json!({"messages": [{"role": "user", "content": "Describe the film."}],
        "max_tokens": 400, "stream": true, "ignore_eos": true})
    .to_string();
    write!(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer key-one\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let (status, retry, body) = ask("key-one");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(!body.to_string().contains("key-one"), "{body}");
    assert_eq!(ask("key-two").0, 200);
    let rest: Vec<String> = reader.lines().map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "data: [DONE]"));
    assert_eq!(ask("key-one").0, 200);
    // key-two: two a minute, the first already used.
    assert_eq!(ask("key-two").0, 200);
    let (status, retry, body) = ask("key-two");
    assert_eq!(status, 429, "{body}");
    let wait: u64 = retry.unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let (_, metrics) = status_with(
        &server,
        "GET",
        "/metrics",
        &[("authorization", "Bearer key-two")],
        None,
    );
    let metrics = metrics.into_string().unwrap();
    assert!(metrics.contains("status=\"429\""), "{metrics}");
}

/// A key's priority orders the queue: with one place, busy, a later request of
/// a lower-numbered key starts (and ends) before an earlier one of a higher.
#[test]
fn a_keys_priority_orders_the_waiting_queue() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(
        &keys,
        "key-busy\nkey-late priority=5\nkey-urgent priority=-5\n",
    )
    .unwrap();
    let server = Server::start(
        "tiny-gemma3",
        &[
            "--api-key-file",
            keys.to_str().unwrap(),
            "--max-num-seqs",
            "1",
        ],
    );
    let base = server.url("");
    let ask = move |key: &'static str, max_tokens: usize| {
        let base = base.clone();
        std::thread::spawn(move || {
            let body = json!({"messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": max_tokens, "ignore_eos": true});
            let r = ureq::post(&format!("{base}/v1/chat/completions"))
                .set("authorization", &format!("Bearer {key}"))
                .send_json(body)
                .unwrap();
            assert_eq!(r.status(), 200);
            Instant::now()
        })
    };
    let busy = ask("key-busy", 1000);
    std::thread::sleep(Duration::from_millis(150));
    let late = ask("key-late", 2);
    std::thread::sleep(Duration::from_millis(150));
    let urgent = ask("key-urgent", 2);
    let both_waiting = Instant::now();
    let busy_done = busy.join().unwrap();
    assert!(
        busy_done > both_waiting,
        "the busy request ended before the others came"
    );
    let (late_done, urgent_done) = (late.join().unwrap(), urgent.join().unwrap());
    assert!(
        urgent_done < late_done,
        "the urgent key's request ended first"
    );
}

#[test]
fn a_bad_limit_in_the_key_file_stops_the_start_without_quoting_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "sk-fine\nsk-very-secret max_concurent=3\n").unwrap();
    let err = refused_start(&keys, &[]);
    assert!(
        err.contains("line 2") && err.contains("unknown limit"),
        "{err}"
    );
    assert!(!err.contains("sk-very-secret"), "{err}");
    // A key given twice (here, once with limits) would be limited by chance.
    std::fs::write(&keys, "sk-twice max_concurrent=1\n").unwrap();
    let err = refused_start(&keys, &["--api-key", "sk-twice"]);
    assert!(err.contains("given twice"), "{err}");
    assert!(!err.contains("sk-twice"), "{err}");
}

fn audit_verify(file: &std::path::Path, key: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medgemma-server"))
        .args(["audit", "verify", file.to_str().unwrap(), "--key-file"])
        .arg(key)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The audit log is a keyed hash chain: it verifies across a restart, and an
/// edited line breaks it at the next line, which `audit verify` names.
#[test]
fn the_audit_log_is_a_chain_that_shows_edits() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let key = dir.path().join("audit.key");
    std::fs::write(&key, "a-long-audit-secret-0123456789\n").unwrap();
    let args = [
        "--audit-log",
        audit.to_str().unwrap(),
        "--audit-key-file",
        key.to_str().unwrap(),
    ];
    let ask = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2});
    for _ in 0..2 {
        let server = Server::start("tiny-gemma3", &args);
        assert_eq!(server.post("/v1/chat/completions", &ask).0, 200);
        assert_eq!(
            server
                .post("/v1/chat/completions", &json!({"messages": []}))
                .0,
            400
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    let (ok, text) = audit_verify(&audit, &key);
    assert!(ok, "{text}");
    let text_log = std::fs::read_to_string(&audit).unwrap();
    let n = text_log.lines().count();
    assert!(n >= 4 && text.contains(&format!("{n} entries")), "{text}");
    let first_line = text_log.lines().next().unwrap();
    assert!(first_line.starts_with("{\"prev\":"), "{first_line}");
    let first: Value = serde_json::from_str(first_line).unwrap();
    assert_eq!(first["prev"], "0".repeat(64));
    assert_eq!(first["client"], "127.0.0.1", "{first}");
    // A 400 turned into a 200 after the fact: the next line no longer follows.
    let lines: Vec<&str> = text_log.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("\"status\":400"))
        .unwrap();
    assert!(at + 1 < n, "the edited line must not be the last");
    let mut edited = lines.clone();
    let changed = lines[at].replace("\"status\":400", "\"status\":200");
    edited[at] = &changed;
    std::fs::write(&audit, edited.join("\n") + "\n").unwrap();
    let (ok, text) = audit_verify(&audit, &key);
    assert!(!ok, "{text}");
    assert!(text.contains(&format!("line {} ", at + 2)), "{text}");
    // Another key does not verify the original either.
    std::fs::write(&audit, &text_log).unwrap();
    std::fs::write(&key, "another-secret-of-enough-bytes").unwrap();
    assert!(!audit_verify(&audit, &key).0);
    std::fs::write(&key, "short").unwrap();
    let (ok, text) = audit_verify(&audit, &key);
    assert!(!ok && text.contains("at least 16 bytes"), "{text}");
}

/// The first audit entry of a 200 response to `route`, waited for (a stream's
/// entry is written when its body ends).
fn audit_entry(audit: &std::path::Path, route: &str) -> Value {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(audit).unwrap_or_default();
        let found = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["route"] == route && l["status"] == 200);
        if let Some(entry) = found {
            return entry;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no entry: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Streams are logged at their end, with the completion tokens the stream's own
/// usage reports, for chat and completions alike.
#[test]
fn a_streams_audit_entry_counts_its_completion_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let server = Server::start("tiny-gemma3", &["--audit-log", audit.to_str().unwrap()]);
    let usage = json!({"include_usage": true});
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5,
                      "n": 2, "ignore_eos": true, "stream": true, "stream_options": usage});
    let text = json!({"prompt": "Hello", "max_tokens": 4, "ignore_eos": true,
                      "stream": true, "stream_options": usage});
    for (route, body, want) in [
        ("/v1/chat/completions", chat, 10),
        ("/v1/completions", text, 4),
    ] {
        let events = server.stream(route, &body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
        let reported = &last["usage"];
        assert_eq!(reported["completion_tokens"], want, "{last}");
        let entry = audit_entry(&audit, route);
        assert_eq!(entry["completion_tokens"], want, "{entry}");
        assert_eq!(entry["prompt_tokens"], reported["prompt_tokens"], "{entry}");
    }
}
