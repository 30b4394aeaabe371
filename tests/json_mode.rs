//! JSON mode (`response_format: {"type": "json_object"}`) on the real binary: every
//! answer is one JSON object, or, cut off by `max_tokens`, the start of one.

mod common;

use common::Server;
use medgemma_preprocess::json_grammar::JsonState;
use serde_json::{json, Map, Value};

fn is_json_start(text: &str) -> bool {
    JsonState::new().feed_all(text.as_bytes())
}

/// The last token id of `text` alone.
fn token_id(server: &Server, text: &str) -> u64 {
    let (_, t) = server.post("/tokenize", &json!({"prompt": text}));
    t["tokens"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_u64()
        .unwrap()
}

fn chat(server: &Server, body: Value) -> Vec<(String, String)> {
    let (status, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{resp}");
    resp["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["message"]["content"].as_str().unwrap().to_string(),
                c["finish_reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn json_mode_answers_with_one_json_object() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([{"role": "user", "content": "Report the findings as JSON."}]);
    // Closing pieces favoured, so that a random model also ends its objects.
    let bias: Map<String, Value> = ["\"", "}", ":", ","]
        .iter()
        .map(|p| (token_id(&server, p).to_string(), json!(4)))
        .collect();
    let mut closed = 0;
    for seed in 0..8 {
        let body = json!({
            "messages": messages, "response_format": {"type": "json_object"},
            "temperature": 1.0, "seed": seed, "max_tokens": 120, "logit_bias": bias, "n": 2,
        });
        for (text, finish) in chat(&server, body) {
            match finish.as_str() {
                "stop" => {
                    let v: Value = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("seed {seed}: {e}: {text:?}"));
                    assert!(v.is_object(), "{text:?}");
                    closed += 1;
                }
                _ => assert!(is_json_start(&text), "seed {seed}: {text:?}"),
            }
        }
    }
    assert!(closed > 0, "no answer closed its object");
    // Greedy, plain and streamed: the same start of an object.
    let body = json!({
        "messages": messages, "response_format": {"type": "json_object"},
        "temperature": 0, "max_tokens": 40,
    });
    let (text, _) = chat(&server, body.clone()).remove(0);
    assert!(text.starts_with('{') && is_json_start(&text), "{text:?}");
    let mut streamed = String::new();
    let mut sbody = body;
    sbody["stream"] = json!(true);
    for line in server.stream("/v1/chat/completions", &sbody) {
        if let Ok(c) = serde_json::from_str::<Value>(&line) {
            streamed.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(streamed, text);
    // Completions take it too; nothing may follow the object, so ignore_eos is refused.
    let (status, resp) = server.post(
        "/v1/completions",
        &json!({"prompt": "Findings:", "response_format": {"type": "json_object"},
            "temperature": 0, "max_tokens": 20}),
    );
    assert_eq!(status, 200, "{resp}");
    let text = resp["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with('{') && is_json_start(text), "{text:?}");
    let (status, resp) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "response_format": {"type": "json_object"},
            "ignore_eos": true}),
    );
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["error"]["param"], "ignore_eos");
    // Without JSON mode the same request is free text.
    let free = chat(
        &server,
        json!({"messages": messages, "temperature": 0, "max_tokens": 40}),
    );
    assert!(!is_json_start(&free[0].0), "{:?}", free[0].0);
}
