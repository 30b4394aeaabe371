//! The OpenAI-compatible API over raw HTTP on the real binary.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::{assert_error_shape, goldens, Server};
use serde_json::{json, Value};

fn natural_request(p: &Value) -> (Value, String, String) {
    let n = p["natural"]["ids"].as_array().unwrap().len();
    let finish = p["natural"]["finish_reason"].as_str().unwrap().to_string();
    let max = if finish == "stop" { n + 3 } else { n };
    let body =
        json!({"model": "tiny", "messages": p["messages"], "temperature": 0, "max_tokens": max});
    (
        body,
        p["natural"]["text"].as_str().unwrap().to_string(),
        finish,
    )
}

#[test]
fn greedy_chat_equals_the_golden_text_plain_and_streamed() {
    for ckpt in ["tiny-gemma3", "tiny-gemma3-text"] {
        let server = Server::start(ckpt, &[]);
        let g = goldens(ckpt);
        for (name, p) in g["prompts"].as_object().unwrap() {
            let (body, want, finish) = natural_request(p);
            let (status, resp) = server.post("/v1/chat/completions", &body);
            assert_eq!(status, 200, "{resp}");
            let choice = &resp["choices"][0];
            // transformers decodes special tokens too; the API skips them.
            let want_text = if want.contains('<') {
                None
            } else {
                Some(want.as_str())
            };
            if let Some(w) = want_text {
                assert_eq!(choice["message"]["content"], w, "{ckpt}/{name}");
            }
            assert_eq!(choice["finish_reason"], finish.as_str(), "{ckpt}/{name}");
            let prompt_len = p["input_ids"].as_array().unwrap().len();
            assert_eq!(resp["usage"]["prompt_tokens"], prompt_len);

            let mut sbody = body.clone();
            sbody["stream"] = json!(true);
            let lines = server.stream("/v1/chat/completions", &sbody);
            assert_eq!(lines.last().unwrap(), "[DONE]");
            let mut text = String::new();
            let mut finish_seen = None;
            for l in &lines[..lines.len() - 1] {
                let c: Value = serde_json::from_str(l).unwrap();
                assert_eq!(c["object"], "chat.completion.chunk");
                if let Some(d) = c["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(d);
                }
                if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
                    finish_seen = Some(f.to_string());
                }
            }
            assert_eq!(
                text,
                choice["message"]["content"].as_str().unwrap(),
                "{ckpt}/{name}: deltas"
            );
            assert_eq!(finish_seen.as_deref(), Some(finish.as_str()));
        }
    }
}

#[test]
fn logprobs_n_stop_and_usage() {
    let server = Server::start("tiny-gemma3", &[]);
    let g = goldens("tiny-gemma3");
    let p = &g["prompts"]["short"];
    let body = json!({"messages": p["messages"], "temperature": 0, "max_tokens": 5, "logprobs": true, "top_logprobs": 5, "n": 2});
    let (status, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["choices"].as_array().unwrap().len(), 2);
    let lp = &resp["choices"][0]["logprobs"]["content"];
    let golden_top = &p["greedy_top5"][0];
    assert_eq!(lp[0]["top_logprobs"].as_array().unwrap().len(), 5);
    let got = lp[0]["logprob"].as_f64().unwrap();
    assert!((got - golden_top[0][1].as_f64().unwrap()).abs() < 1e-4);
    assert_eq!(resp["usage"]["completion_tokens"], 10);
    // Every alternative's bytes are the token's own bytes, whatever its display.
    for entry in lp.as_array().unwrap() {
        for alt in entry["top_logprobs"].as_array().unwrap() {
            let token = alt["token"].as_str().unwrap();
            let bytes: Vec<u8> = alt["bytes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            match token.strip_prefix("bytes:") {
                Some(hex) => assert_eq!(hex.matches("\\x").count(), bytes.len(), "{alt}"),
                None => assert_eq!(token.as_bytes(), bytes.as_slice(), "{alt}"),
            }
        }
    }

    // A stop string cut from the golden text ends the answer before it.
    let text = p["natural"]["text"].as_str().unwrap();
    let stop: String = text.chars().skip(6).take(3).collect();
    let cut = text.find(&stop).unwrap();
    let body =
        json!({"messages": p["messages"], "temperature": 0, "max_tokens": 40, "stop": [stop]});
    let (_, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(resp["choices"][0]["message"]["content"], &text[..cut]);
    assert_eq!(resp["choices"][0]["finish_reason"], "stop");

    // min_tokens holds the end of sequence back: even a forced one waits.
    let held = json!({"messages": p["messages"], "max_tokens": 9, "min_tokens": 4,
        "logit_bias": {"1": 100}});
    let (_, resp) = server.post("/v1/chat/completions", &held);
    assert_eq!(resp["choices"][0]["finish_reason"], "stop", "{resp}");
    assert_eq!(
        resp["usage"]["completion_tokens"], 5,
        "four tokens, then the end"
    );

    // The end-of-sequence token was sampled like any other: counted (as vLLM
    // counts it), never shown; the same in the streamed usage.
    let eos = json!({"messages": p["messages"], "max_tokens": 5, "logit_bias": {"1": 100}});
    let (_, resp) = server.post("/v1/chat/completions", &eos);
    assert_eq!(resp["choices"][0]["message"]["content"], "", "{resp}");
    assert_eq!(resp["choices"][0]["finish_reason"], "stop");
    assert_eq!(resp["usage"]["completion_tokens"], 1, "{resp}");
    let mut streamed = eos.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = server.stream("/v1/chat/completions", &streamed);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 1, "{events:?}");
}

#[test]
fn completions_tokenize_models_and_metrics() {
    let server = Server::start("tiny-gemma3", &[]);
    let (s, r) = server.post("/v1/completions", &json!({"prompt": ["Hello", "Chest X-ray"], "max_tokens": 3, "temperature": 0, "echo": true, "logprobs": 2}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["choices"].as_array().unwrap().len(), 2);
    assert!(r["choices"][0]["text"]
        .as_str()
        .unwrap()
        .starts_with("Hello"));
    assert_eq!(
        r["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // text_offset counts characters of the choice's text, from the echoed prompt on.
    let (s, r) = server.post(
        "/v1/completions",
        &json!({"prompt": "Ré: ", "max_tokens": 12, "temperature": 0, "echo": true, "logprobs": 1}),
    );
    assert_eq!(s, 200, "{r}");
    let text: Vec<char> = r["choices"][0]["text"].as_str().unwrap().chars().collect();
    let lp = &r["choices"][0]["logprobs"];
    let offsets = lp["text_offset"].as_array().unwrap();
    assert_eq!(offsets[0], 4, "{r}");
    let offs: Vec<u64> = offsets.iter().map(|o| o.as_u64().unwrap()).collect();
    assert!(offs.windows(2).all(|w| w[0] <= w[1]), "{offs:?}");
    assert!(
        *offs.last().unwrap() as usize <= text.len(),
        "{offs:?} in {text:?}"
    );
    for (tok, off) in lp["tokens"].as_array().unwrap().iter().zip(offsets) {
        let (tok, off) = (tok.as_str().unwrap(), off.as_u64().unwrap() as usize);
        if !tok.starts_with("bytes:") {
            let at: String = text[off..].iter().collect();
            assert!(at.starts_with(tok), "{tok:?} at {off} in {text:?}");
        }
    }
    // Requests that could never be queued are a 400, not an endless 429.
    let many: Vec<String> = (0..300).map(|i| format!("p{i}")).collect();
    let (s, r) = server.post("/v1/completions", &json!({"prompt": many, "max_tokens": 1}));
    assert_eq!(s, 400, "{r}");
    assert_eq!(r["error"]["param"], "prompt");
    let (s, m) = server.get("/v1/models/tiny");
    assert_eq!(s, 200, "{m}");
    assert!(m.contains("\"object\":\"model\""), "{m}");
    let (s, m) = server.get("/v1/models/org%2Fother");
    assert_eq!(s, 404, "{m}");
    assert!(m.contains("model_not_found"), "{m}");
    let (s, t) = server.post("/tokenize", &json!({"prompt": "Chest X-ray"}));
    assert_eq!(s, 200);
    let tokens = t["tokens"].clone();
    let (_, d) = server.post("/detokenize", &json!({"tokens": tokens}));
    assert_eq!(d["prompt"], "<bos>Chest X-ray");
    let (s, m) = server.get("/v1/models");
    assert_eq!(s, 200);
    assert!(m.contains("\"id\":\"tiny\""));
    let (s, metrics) = server.get("/metrics");
    assert_eq!(s, 200);
    assert!(
        metrics.contains("medgemma_running_sequences")
            && metrics.contains("medgemma_time_to_first_token_seconds_bucket")
    );
    // Decode steps are not replayed on the CPU, so none runs ahead.
    assert_eq!(server.metric("medgemma_decode_steps_run_ahead_total"), 0.0);
    assert_eq!(server.metric("medgemma_decode_steps_ahead_used_total"), 0.0);
}

#[test]
fn malformed_requests_get_openai_errors_and_the_server_stays_healthy() {
    let server = Server::start("tiny-gemma3", &["--max-model-len", "200"]);
    let user = json!([{"role": "user", "content": "Hi"}]);
    let long = "lesion ".repeat(400);
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("/v1/chat/completions", "{not json".into(), 400, None),
        ("/v1/chat/completions", "[]".into(), 400, None),
        ("/v1/chat/completions", "".into(), 400, None),
        ("/v1/chat/completions", json!({"messages": "hi"}).to_string(), 400, Some("messages")),
        ("/v1/chat/completions", json!({"messages": []}).to_string(), 400, Some("messages")),
        ("/v1/chat/completions", json!({"model": "gpt-4", "messages": user}).to_string(), 404, None),
        ("/v1/chat/completions", json!({"messages": user, "max_tokens": -1}).to_string(), 400, Some("max_tokens")),
        ("/v1/chat/completions", json!({"messages": user, "max_tokens": "ten"}).to_string(), 400, Some("max_tokens")),
        ("/v1/chat/completions", json!({"messages": user, "temperature": 5}).to_string(), 400, Some("temperature")),
        ("/v1/chat/completions", json!({"messages": user, "temperature": "hot"}).to_string(), 400, Some("temperature")),
        ("/v1/chat/completions", json!({"messages": user, "top_p": 0}).to_string(), 400, Some("top_p")),
        ("/v1/chat/completions", json!({"messages": user, "n": 0}).to_string(), 400, Some("n")),
        ("/v1/chat/completions", json!({"messages": user, "top_logprobs": 30, "logprobs": true}).to_string(), 400, Some("top_logprobs")),
        ("/v1/chat/completions", json!({"messages": user, "top_logprobs": 3}).to_string(), 400, Some("top_logprobs")),
        ("/v1/chat/completions", json!({"messages": user, "logit_bias": {"99999": 5}}).to_string(), 400, Some("logit_bias")),
        ("/v1/chat/completions", json!({"messages": user, "stop": 7}).to_string(), 400, Some("stop")),
        ("/v1/chat/completions", json!({"messages": [{"role": "wizard", "content": "x"}]}).to_string(), 400, Some("messages[0].role")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user"}]}).to_string(), 400, Some("messages[0].content")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}).to_string(), 400, Some("messages[0].content[0].image_url.url")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}).to_string(), 400, Some("messages[0].content[0].image_url.url")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.org/x.png"}}]}]}).to_string(), 400, Some("messages[0].content[0].image_url.url")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": [{"type": "audio", "data": "x"}]}]}).to_string(), 400, Some("messages[0].content[0]")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": long}]}).to_string(), 400, Some("messages")),
        ("/v1/chat/completions", json!({"messages": user, "max_tokens": 500}).to_string(), 400, Some("max_tokens")),
        ("/v1/chat/completions", json!({"messages": user, "response_format": {"type": "yaml"}}).to_string(), 400, Some("response_format")),
        ("/v1/chat/completions", json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "propertyNames": {}}}}}).to_string(), 400, Some("response_format")),
        ("/v1/chat/completions", json!({"messages": user, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}).to_string(), 400, Some("response_format")),
        ("/v1/chat/completions", json!({"messages": user, "response_format": {"type": "text"}, "tools": [], "tool_choice": "none", "max_tokens": 1}).to_string(), 200, None),
        ("/v1/chat/completions", json!({"messages": user, "tools": [{"type": "function", "function": {"name": "bad name"}}]}).to_string(), 400, Some("tools")),
        ("/v1/chat/completions", json!({"messages": user, "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "patternProperties": {}}}}]}).to_string(), 400, Some("tools")),
        ("/v1/chat/completions", json!({"messages": user, "functions": [{"name": "f"}]}).to_string(), 400, Some("functions")),
        ("/v1/chat/completions", json!({"messages": user, "tool_choice": "required"}).to_string(), 400, Some("tool_choice")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"id": "1"}]}]}).to_string(), 400, Some("messages[1].tool_calls[0]")),
        ("/v1/chat/completions", json!({"messages": [{"role": "function", "content": "42", "name": "f"}]}).to_string(), 400, Some("messages[0].role")),
        ("/v1/chat/completions", json!({"messages": [{"role": "tool", "content": "42"}]}).to_string(), 400, Some("messages[0].tool_call_id")),
        ("/v1/completions", json!({"prompt": ""}).to_string(), 200, None),
        ("/v1/completions", json!({"prompt": []}).to_string(), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": [999999]}).to_string(), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": "x", "suffix": "y"}).to_string(), 400, Some("suffix")),
        ("/v1/completions", json!({"prompt": "x", "logprobs": 50}).to_string(), 400, Some("logprobs")),
        ("/v1/completions", json!({"max_tokens": 3}).to_string(), 400, None),
        ("/detokenize", json!({"tokens": [1, -2]}).to_string(), 400, Some("tokens[1]")),
        ("/tokenize", json!({}).to_string(), 400, Some("prompt")),
        ("/v1/nothing", "{}".into(), 404, None),
    ];
    for (path, body, want, param) in &cases {
        let (status, resp) = server.post_raw(path, body);
        let ctx = format!("{path} {body:.80}");
        assert_eq!(status, *want, "{ctx}: {resp}");
        if *want != 200 {
            assert_error_shape(&resp, &ctx);
            if let Some(p) = param {
                assert_eq!(resp["error"]["param"], *p, "{ctx}");
            }
        }
    }
    // Same-role neighbours are merged (texts joined by a blank line); a turn the
    // template still refuses is named by its index in the request.
    let tokens = |messages: Value| {
        server.post("/tokenize", &json!({"messages": messages})).1["tokens"].clone()
    };
    let split = json!([{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}, {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "text", "text": "c"}]}]);
    // Only the seam is joined: the template runs a message's own text parts together.
    let joined =
        json!([{"role": "system", "content": "s\n\nd"}, {"role": "user", "content": "a\n\nbc"}]);
    assert_eq!(tokens(split), tokens(joined));
    let mid_system = json!({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "a2"}, {"role": "assistant", "content": "b"}, {"role": "system", "content": "s"}, {"role": "user", "content": "c"}]});
    let (status, resp) = server.post("/v1/chat/completions", &mid_system);
    assert_eq!(status, 400, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages[3]"),
        "{resp}"
    );
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
    let (status, resp) = server.post(
        "/v1/chat/completions",
        &json!({"messages": user, "max_tokens": 2}),
    );
    assert_eq!(status, 200, "still serving: {resp}");
    let out = std::process::Command::new("curl")
        .args(["-s", "-X", "GET", &server.url("/v1/chat/completions")])
        .output()
        .unwrap();
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_error_shape(&body, "GET on a POST route");
}

#[test]
fn a_client_that_disconnects_mid_stream_frees_its_sequence() {
    let server = Server::start("tiny-gemma3", &[]);
    let addr = server.base.strip_prefix("http://").unwrap().to_string();
    let body =
        json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 900, "stream": true})
            .to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < 3 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("data: ") {
            seen += 1;
        }
    }
    assert_eq!(server.metric("medgemma_running_sequences"), 1.0);
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(reader);
    let start = Instant::now();
    while server.metric("medgemma_running_sequences") != 0.0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sequence was never freed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.metric("medgemma_cancelled_sequences_total") >= 1.0);
    // Every gauge says so while the server idles, not only after a later step.
    assert_eq!(server.metric("medgemma_kv_sequences"), 0.0);
    assert_eq!(server.metric("medgemma_kv_blocks_used"), 0.0);
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
}

/// Images as data URLs through the API give transformers' numbers: the chosen
/// token's log probability at every greedy step equals the golden top-1 within
/// 1e-4, as the model tests check on the processor's own pixels (our decoding and
/// resizing give PIL's pixels exactly, JPEG included).
#[test]
fn image_prompts_through_the_api_equal_transformers() {
    let server = Server::start("tiny-gemma3", &[]);
    let g: Value = common::image_goldens();
    let bias: serde_json::Map<String, Value> = g["eos_suppressed_in_greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| (id.to_string(), json!(-100)))
        .collect();
    for (name, p) in g["prompts"].as_object().unwrap() {
        let steps = p["greedy_ids"].as_array().unwrap().len();
        let body = json!({
            "messages": common::image_messages(p), "temperature": 0, "max_tokens": steps,
            "logprobs": true, "top_logprobs": 5, "logit_bias": bias, "do_pan_and_scan": p["do_pan_and_scan"],
        });
        let (status, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{name}: {resp}");
        assert_eq!(
            resp["usage"]["prompt_tokens"],
            p["input_ids"].as_array().unwrap().len(),
            "{name}"
        );
        let content = resp["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap();
        assert_eq!(content.len(), steps, "{name}");
        for (step, entry) in content.iter().enumerate() {
            let want = p["greedy_top5"][step][0][1].as_f64().unwrap();
            let got = entry["logprob"].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "{name} step {step}: {got} vs {want}"
            );
        }
    }
    let bad = [
        ("data:image/png;base64,", 400),
        ("data:image/png;base64,aGVsbG8gd29ybGQ=", 400),
    ];
    for (url, status) in bad {
        let body = json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]});
        let (s, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(s, status, "{url}: {resp}");
        assert_error_shape(&resp, url);
    }
    // A cut-off upload is refused, naming the part that held it.
    let jpeg = std::fs::read(common::fixture("images/photo.jpg")).unwrap();
    let cut = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(&jpeg[..jpeg.len() * 6 / 10])
    };
    let body = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image_url", "image_url": {"url": format!("data:image/jpeg;base64,{cut}")}}]}]});
    let (s, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(s, 400, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{resp}"
    );
    assert_eq!(
        resp["error"]["param"],
        "messages[0].content[1].image_url.url"
    );
    let two_markers = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "no image"}]}], "max_tokens": 1});
    assert_eq!(server.post("/v1/chat/completions", &two_markers).0, 200);
    // Image tokens typed into the text beside a real image: a 400, not a 500.
    let (_, p) = g["prompts"].as_object().unwrap().iter().next().unwrap();
    let mut msgs = common::image_messages(p);
    let image = msgs[0]["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|part| part["type"] == "image_url")
        .unwrap()
        .clone();
    msgs = json!([{"role": "user", "content": [{"type": "text", "text": "<image_soft_token>"}, image]}]);
    let (s, resp) = server.post(
        "/v1/chat/completions",
        &json!({"messages": msgs, "max_tokens": 1}),
    );
    assert_eq!(s, 400, "{resp}");
    assert_error_shape(&resp, "image tokens in the text");
    // ... and without any image: the model would read an image that is not there.
    let typed = json!([{"role": "user", "content": "Look: <image_soft_token>"}]);
    let (s, resp) = server.post(
        "/v1/chat/completions",
        &json!({"messages": typed, "max_tokens": 1}),
    );
    assert_eq!(s, 400, "{resp}");
    assert_eq!(resp["error"]["param"], "messages", "{resp}");
    let (_, t) = server.post("/tokenize", &json!({"prompt": "<image_soft_token>"}));
    let (s, resp) = server.post(
        "/v1/completions",
        &json!({"prompt": t["tokens"], "max_tokens": 1}),
    );
    assert_eq!(s, 400, "{resp}");
    assert_eq!(resp["error"]["param"], "prompt", "{resp}");

    // /tokenize counts a chat's images as the chat request does: expanded.
    for (name, p) in g["prompts"].as_object().unwrap() {
        if p["do_pan_and_scan"] == json!(true) {
            continue;
        }
        let (s, t) = server.post("/tokenize", &json!({"messages": common::image_messages(p)}));
        assert_eq!(s, 200, "{name}: {t}");
        assert_eq!(t["tokens"], p["input_ids"], "{name}");
    }
}

/// A DICOM file in an image part reads exactly as the PNG of its reference
/// rendering (tests/fixtures/dicom): same tokens, same log probabilities; an
/// unsupported one is a 400 naming the part.
#[test]
fn dicom_image_parts_read_as_their_reference_rendering() {
    use base64::Engine as _;
    let server = Server::start("tiny-gemma3", &[]);
    let url = |file: &str, mime: &str| {
        let bytes = std::fs::read(common::fixture(&format!("dicom/{file}"))).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        format!("data:{mime};base64,{b64}")
    };
    let ask = |image: String| {
        let body = json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": "Findings?"},
        ]}], "temperature": 0, "max_tokens": 4, "logprobs": true, "top_logprobs": 3});
        let (s, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(s, 200, "{resp}");
        assert_eq!(resp["usage"]["prompt_tokens"], 27, "{resp}");
        let steps = resp["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .clone();
        steps
            .iter()
            .map(|t| (t["token"].clone(), t["logprob"].as_f64().unwrap()))
            .collect::<Vec<_>>()
    };
    // The second request reuses cached prefix state, which may round
    // differently in the last digits: the same tokens, logprobs within 1e-5.
    for name in ["ct_implicit", "cr_jpeg_lossless", "us_rgb_planar"] {
        let dicom = ask(url(&format!("{name}.dcm"), "application/dicom"));
        let png = ask(url(&format!("{name}.png"), "image/png"));
        assert_eq!(dicom.len(), png.len(), "{name}");
        for ((t1, l1), (t2, l2)) in dicom.iter().zip(&png) {
            assert_eq!(t1, t2, "{name}");
            assert!((l1 - l2).abs() < 1e-5, "{name}: {l1} vs {l2}");
        }
    }
    let mut frames = std::fs::read(common::fixture("dicom/ct_functional_groups.dcm")).unwrap();
    let at = frames
        .windows(4)
        .position(|w| w == [0x28, 0x00, 0x08, 0x00])
        .unwrap();
    frames[at + 8] = b'7';
    let b64 = base64::engine::general_purpose::STANDARD.encode(&frames);
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Findings?"},
        {"type": "image_url", "image_url": {"url": format!("data:application/dicom;base64,{b64}")}},
    ]}]});
    let (s, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(s, 400, "{resp}");
    assert_error_shape(&resp, "multi-frame DICOM");
    let msg = resp["error"]["message"].as_str().unwrap();
    assert!(msg.contains("DICOM") && msg.contains("7 frames"), "{msg}");
    assert_eq!(
        resp["error"]["param"],
        "messages[0].content[1].image_url.url"
    );
    assert!(!resp.to_string().contains("CANARY"), "{resp}");
    assert_eq!(server.get("/health").0, 200);
}
