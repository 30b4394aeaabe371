//! A real `medgemma-server serve` on a free port, for the HTTP tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn goldens(ckpt: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(ckpt).join("goldens.json")).unwrap())
        .unwrap()
}

/// tiny-gemma3's image prompts with transformers' outputs.
pub fn image_goldens() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-gemma3/image_goldens.json")).unwrap(),
    )
    .unwrap()
}

pub struct Server {
    pub child: Child,
    pub base: String,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The last token id of `text` alone (its first ones are BOS and the like).
    #[allow(dead_code)] // not every test binary biases tokens
    pub fn token_id(&self, text: &str) -> u64 {
        let (_, t) = self.post("/tokenize", &serde_json::json!({"prompt": text}));
        t["tokens"]
            .as_array()
            .and_then(|a| a.last())
            .and_then(|v| v.as_u64())
            .unwrap()
    }

    pub fn start(ckpt: &str, extra: &[&str]) -> Self {
        Self::start_with_env(ckpt, extra, &[])
    }

    pub fn start_with_env(ckpt: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_medgemma-server"));
        cmd.args([
            "serve",
            "--port",
            "0",
            "--served-model-name",
            "tiny",
            "--model",
        ])
        .arg(fixture(ckpt))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let s = Self {
            child,
            base: addr.to_string(),
            stderr_path,
            _dir: dir,
        };
        if s.base.starts_with("http://") {
            s.wait_ready();
        }
        s
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = ureq::get(&self.url("/ready")).call() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "server never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs a raw body; returns status and parsed JSON (or the text as a JSON string).
    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = ureq::post(&self.url(path))
            .set("content-type", "application/json")
            .send_string(body);
        match r {
            Ok(resp) => (resp.status(), parse(resp.into_string().unwrap())),
            Err(ureq::Error::Status(code, resp)) => (code, parse(resp.into_string().unwrap())),
            Err(e) => panic!("{e}"),
        }
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        match ureq::get(&self.url(path)).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        }
    }

    /// The data lines of a streamed response.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let resp = ureq::post(&self.url(path)).send_json(body.clone()).unwrap();
        assert!(resp.content_type().starts_with("text/event-stream"));
        BufReader::new(resp.into_reader())
            .lines()
            .map(|l| l.unwrap())
            .filter_map(|l| l.strip_prefix("data: ").map(String::from))
            .collect()
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.strip_prefix(' '))
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

fn parse(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the OpenAI error shape.
pub fn assert_error_shape(body: &Value, ctx: &str) {
    let e = &body["error"];
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{ctx}: {body}"
    );
    assert!(e["type"].is_string(), "{ctx}: {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{ctx}: {body}"
    );
}

/// Golden image prompts as OpenAI messages: each `{"type":"image"}` becomes an
/// `image_url` part with the fixture image as a base64 data: URL.
pub fn image_messages(p: &Value) -> Value {
    use base64::Engine as _;
    let mut files = p["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string());
    let mut msgs = p["messages"].clone();
    for m in msgs.as_array_mut().unwrap() {
        let Some(parts) = m["content"].as_array_mut() else {
            continue;
        };
        for part in parts {
            if part["type"] == "image" {
                let file = files.next().unwrap();
                let bytes = std::fs::read(fixture("images").join(&file)).unwrap();
                let url = format!(
                    "data:image/x;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                );
                *part = serde_json::json!({"type": "image_url", "image_url": {"url": url}});
            }
        }
    }
    msgs
}

/// A request with these headers; the status and the response, also for errors.
pub fn status_with(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, ureq::Response) {
    let mut req = ureq::request(method, &server.url(path));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let r = match body {
        Some(b) => req.send_string(b),
        None => req.call(),
    };
    match r {
        Ok(resp) => (resp.status(), resp),
        Err(ureq::Error::Status(code, resp)) => (code, resp),
        Err(e) => panic!("{e}"),
    }
}
