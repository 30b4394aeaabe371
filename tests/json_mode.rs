//! JSON mode (`response_format: {"type": "json_object"}`) on the real binary: every
//! answer is one JSON object, or, cut off by `max_tokens`, the start of one.

mod common;

use common::Server;
use medgemma_preprocess::schema::{Schema, SchemaState};
use serde_json::{json, Map, Value};

fn is_json_start(text: &str) -> bool {
    SchemaState::new().feed_all(&Schema::any_object(), text.as_bytes())
}

/// The content of a streamed chat answer.
fn streamed(server: &Server, mut body: Value) -> String {
    body["stream"] = json!(true);
    let mut text = String::new();
    for line in server.stream("/v1/chat/completions", &body) {
        if let Ok(c) = serde_json::from_str::<Value>(&line) {
            text.push_str(c["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    text
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
        .map(|p| (server.token_id(p).to_string(), json!(4)))
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
    assert_eq!(streamed(&server, body), text);
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

/// A finding as a clinical tool would ask for it; every rule is checked below
/// on the parsed answer, independently of the recognizer.
fn finding_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "finding": {"enum": ["normal", "effusion", "pneumothorax"]},
            "side": {"anyOf": [{"enum": ["left", "right"]}, {"type": "null"}]},
            "size_mm": {"type": "integer", "minimum": 0, "maximum": 99},
            "code": {"type": "string", "pattern": "^[A-Z][0-9]{2}$"},
            "notes": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2}
        },
        "required": ["finding", "side", "size_mm", "code", "notes"],
        "additionalProperties": false
    })
}

fn check_finding(v: &Value) {
    let obj = v.as_object().unwrap_or_else(|| panic!("{v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "finding", "notes", "side", "size_mm"], "{v}");
    assert!(["normal", "effusion", "pneumothorax"].contains(&obj["finding"].as_str().unwrap()));
    assert!(obj["side"].is_null() || ["left", "right"].contains(&obj["side"].as_str().unwrap()));
    let size = obj["size_mm"].as_i64().unwrap_or_else(|| panic!("{v}"));
    assert!((0..=99).contains(&size), "{v}");
    let code: Vec<char> = obj["code"].as_str().unwrap().chars().collect();
    assert!(code.len() == 3 && code[0].is_ascii_uppercase(), "{v}");
    assert!(code[1..].iter().all(char::is_ascii_digit), "{v}");
    let notes = obj["notes"].as_array().unwrap();
    assert!(notes.len() <= 2, "{v}");
    assert!(
        notes
            .iter()
            .all(|n| n.as_str().unwrap().chars().count() <= 5),
        "{v}"
    );
}

#[test]
fn json_schema_answers_follow_the_schema() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([{"role": "user", "content": "Report the finding."}]);
    let format = json!({"type": "json_schema",
        "json_schema": {"name": "finding", "strict": true, "schema": finding_schema()}});
    let schema = Schema::compile(&finding_schema()).unwrap();
    let bias: Map<String, Value> = ["\"", "]", "}", ","]
        .iter()
        .map(|p| (server.token_id(p).to_string(), json!(3)))
        .collect();
    let mut closed = 0;
    for seed in 0..6 {
        let body = json!({"messages": messages, "response_format": format, "temperature": 1.0,
            "seed": seed, "max_tokens": 200, "logit_bias": bias, "n": 2});
        for (text, finish) in chat(&server, body) {
            let mut state = SchemaState::new();
            assert!(
                state.feed_all(&schema, text.as_bytes()),
                "seed {seed}: {text:?}"
            );
            if finish == "stop" {
                check_finding(&serde_json::from_str(&text).unwrap());
                closed += 1;
            }
        }
    }
    assert!(closed > 0, "no answer was complete");
    // Streamed equals plain; completions take the same format.
    let body = json!({"messages": messages, "response_format": format, "temperature": 0,
        "max_tokens": 60, "logit_bias": bias});
    let (text, _) = chat(&server, body.clone()).remove(0);
    assert_eq!(streamed(&server, body), text);
    let (status, resp) = server.post(
        "/v1/completions",
        &json!({"prompt": "Finding:", "response_format": format, "temperature": 0,
            "max_tokens": 30}),
    );
    assert_eq!(status, 200, "{resp}");
    let text = resp["choices"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("{\"") || text.starts_with('{'), "{text:?}");
    assert!(
        SchemaState::new().feed_all(&schema, text.as_bytes()),
        "{text:?}"
    );
}

#[test]
fn schemas_that_cannot_be_enforced_are_refused() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([{"role": "user", "content": "Hi"}]);
    for (schema, needle) in [
        (
            json!({"type": "object", "patternProperties": {"^x": {}}}),
            "#/patternProperties",
        ),
        (
            json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/B"}}}),
            "#/properties/a/$ref",
        ),
        (json!({"type": "array", "uniqueItems": true}), "uniqueItems"),
        (json!({"type": "string", "pattern": "(?=a)"}), "#/pattern"),
    ] {
        let body = json!({"messages": messages, "response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": schema}}});
        let (status, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 400, "{resp}");
        assert_eq!(resp["error"]["param"], "response_format", "{resp}");
        let msg = resp["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg}");
    }
    // The server is fine afterwards.
    let (status, _) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "max_tokens": 3}),
    );
    assert_eq!(status, 200);
}
