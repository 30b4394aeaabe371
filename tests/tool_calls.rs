//! Tool calling on the real binary: `required` and named tools always give
//! valid calls, `auto` gives text or valid calls, streamed as plain, and the
//! history's calls and results are rendered back into the prompt.

mod common;

use common::Server;
use serde_json::{json, Map, Value};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_labs", "description": "Recent lab results",
            "parameters": {"type": "object", "properties": {
                "panel": {"enum": ["cbc", "bmp", "lft"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 30}
            }, "required": ["panel", "days"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "page_doctor",
            "parameters": {"type": "object", "properties": {"urgent": {"type": "boolean"}},
                "required": ["urgent"]}}}
    ])
}

/// Checks a call against the tools above, independently of the recognizer.
fn check_call(call: &Value) {
    assert_eq!(call["type"], "function");
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    let args = args.as_object().unwrap();
    match call["function"]["name"].as_str().unwrap() {
        "get_labs" => {
            assert!(["cbc", "bmp", "lft"].contains(&args["panel"].as_str().unwrap()));
            assert!((1..=30).contains(&args["days"].as_i64().unwrap()));
            assert_eq!(args.len(), 2);
        }
        "page_doctor" => {
            assert!(args["urgent"].is_boolean());
            assert_eq!(args.len(), 1);
        }
        other => panic!("unknown tool {other}"),
    }
}

fn bias(server: &Server, pieces: &[(&str, i64)]) -> Map<String, Value> {
    pieces
        .iter()
        .map(|(p, b)| (server.token_id(p).to_string(), json!(b)))
        .collect()
}

#[test]
fn required_and_named_tools_give_valid_calls() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([{"role": "user", "content": "Check the blood count."}]);
    let closing = bias(&server, &[("]", 3), ("}", 3), (",", 2)]);
    let mut called = 0;
    for seed in 0..4 {
        let body = json!({"messages": messages, "tools": tools(), "tool_choice": "required",
            "temperature": 1.0, "seed": seed, "n": 2, "max_tokens": 200, "logit_bias": closing});
        let (status, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{resp}");
        for c in resp["choices"].as_array().unwrap() {
            if c["finish_reason"] == "tool_calls" {
                assert!(c["message"]["content"].is_null(), "{c}");
                let calls = c["message"]["tool_calls"].as_array().unwrap();
                assert!(!calls.is_empty());
                calls.iter().for_each(check_call);
                called += 1;
            } else {
                assert_eq!(c["finish_reason"], "length", "{c}");
            }
        }
    }
    assert!(called > 0, "no answer finished its calls");
    // A named tool, one call at most.
    let named = json!({"type": "function", "function": {"name": "page_doctor"}});
    for seed in 0..3 {
        let body = json!({"messages": messages, "tools": tools(), "tool_choice": named,
            "parallel_tool_calls": false, "temperature": 1.0, "seed": seed, "max_tokens": 120,
            "logit_bias": closing});
        let (_, resp) = server.post("/v1/chat/completions", &body);
        let c = &resp["choices"][0];
        if c["finish_reason"] == "tool_calls" {
            let calls = c["message"]["tool_calls"].as_array().unwrap();
            assert_eq!(calls.len(), 1, "{c}");
            assert_eq!(calls[0]["function"]["name"], "page_doctor");
            check_call(&calls[0]);
        }
    }
}

#[test]
fn auto_is_text_or_valid_calls_and_streams_alike() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([{"role": "user", "content": "Check the blood count."}]);
    // Forced to open a list: then the calls must be valid.
    let open = bias(&server, &[("[", 100), ("]", 3), ("}", 3)]);
    let body = json!({"messages": messages, "tools": tools(), "temperature": 1.0, "seed": 3,
        "max_tokens": 200, "logit_bias": open});
    let (_, resp) = server.post("/v1/chat/completions", &body);
    let c = &resp["choices"][0];
    assert_ne!(
        c["finish_reason"], "stop",
        "a list that ended must be calls: {c}"
    );
    if c["finish_reason"] == "tool_calls" {
        c["message"]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .for_each(check_call);
    }
    // Streamed: the same calls, sent whole, with an index each.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut finish = Value::Null;
    for (i, line) in server
        .stream("/v1/chat/completions", &sbody)
        .iter()
        .enumerate()
    {
        let Ok(chunk) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let choice = &chunk["choices"][0];
        if i == 0 {
            // As OpenAI sends it: the role, and content null (not left out).
            let delta = choice["delta"].as_object().unwrap();
            assert!(delta.get("content") == Some(&Value::Null), "{chunk}");
        }
        text.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(list) = choice["delta"]["tool_calls"].as_array() {
            // The finish reason comes in a chunk of its own, after the calls.
            assert!(choice["finish_reason"].is_null(), "{chunk}");
            calls.extend(list.iter().cloned());
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    assert_eq!(finish, c["finish_reason"]);
    match c["message"]["tool_calls"].as_array() {
        Some(plain) => {
            assert_eq!(calls.len(), plain.len());
            for (k, (s, p)) in calls.iter().zip(plain).enumerate() {
                assert_eq!(s["index"], k);
                assert_eq!((&s["function"], &s["id"]), (&p["function"], &p["id"]));
            }
        }
        None => assert_eq!(text, c["message"]["content"].as_str().unwrap()),
    }
    // Kept from a list: free text.
    let closed = bias(&server, &[("[", -100)]);
    let body = json!({"messages": messages, "tools": tools(), "temperature": 0, "max_tokens": 12,
        "logit_bias": closed});
    let (_, resp) = server.post("/v1/chat/completions", &body);
    let c = &resp["choices"][0];
    assert!(
        c["message"]["content"].is_string() && c["message"].get("tool_calls").is_none(),
        "{c}"
    );
    // tool_choice none: the same as no tools.
    let (_, with_none) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": tools(), "tool_choice": "none", "temperature": 0, "max_tokens": 12}),
    );
    let (_, without) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "temperature": 0, "max_tokens": 12}),
    );
    assert_eq!(
        with_none["choices"][0]["message"],
        without["choices"][0]["message"]
    );
}

#[test]
fn the_history_of_calls_and_results_is_rendered() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([
        {"role": "system", "content": "You help on the ward."},
        {"role": "user", "content": "Check the blood count."},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_7", "type": "function",
            "function": {"name": "get_labs", "arguments": "{\"panel\": \"cbc\", \"days\": 2}"}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "Hb 9.1 g/dL"},
        {"role": "user", "content": "Anything urgent?"}
    ]);
    let (status, resp) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": tools(), "max_tokens": 4}),
    );
    assert_eq!(status, 200, "{resp}");
    // What the template got: the tools in the system turn, the call as the model
    // writes calls, the result in a user turn.
    let (_, t) = server.post("/tokenize", &json!({"messages": messages}));
    let (_, text) = server.post("/detokenize", &json!({"tokens": t["tokens"]}));
    let text = text["prompt"].as_str().unwrap();
    assert!(
        text.contains(r#"[{"name":"get_labs","arguments":{"days":2,"panel":"cbc"}}]"#),
        "{text}"
    );
    assert!(
        text.contains("Result of get_labs (call call_7):\nHb 9.1 g/dL"),
        "{text}"
    );
    assert!(text.contains("You help on the ward."), "{text}");
    // /tokenize with the tools counts what the chat request's prompt holds.
    let (_, t) = server.post(
        "/tokenize",
        &json!({"messages": messages, "tools": tools()}),
    );
    assert_eq!(t["count"], resp["usage"]["prompt_tokens"], "{t}");
    let (_, text) = server.post("/detokenize", &json!({"tokens": t["tokens"]}));
    let name = tools()[1]["function"]["name"].as_str().unwrap().to_string();
    assert!(text["prompt"].as_str().unwrap().contains(&name), "{text}");
    // A tool_call_id on a message that is not a tool result is not one.
    let stray = json!([{"role": "user", "content": "Hello", "tool_call_id": "call_7"}]);
    let (_, t) = server.post("/tokenize", &json!({"messages": stray}));
    let (_, text) = server.post("/detokenize", &json!({"tokens": t["tokens"]}));
    assert!(
        !text["prompt"].as_str().unwrap().contains("Result of"),
        "{text}"
    );
}

#[test]
fn parameters_that_allow_other_values_are_narrowed_to_objects() {
    let server = Server::start("tiny-gemma3", &[]);
    let messages = json!([{"role": "user", "content": "Ping."}]);
    let closing = bias(&server, &[("]", 4), ("}", 4), ("{", 3)]);
    let mut called = 0;
    let schemas = [
        json!({}),
        json!({"anyOf": [{"type": "integer"}, {"type": "object"}]}),
    ];
    for seed in 0..6 {
        let tools = json!([{"type": "function", "function": {"name": "ping",
            "parameters": schemas[seed % 2]}}]);
        let body = json!({"messages": messages, "tools": tools, "tool_choice": "required",
            "temperature": 1.0, "seed": seed, "max_tokens": 100, "logit_bias": closing});
        let (status, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{resp}");
        let c = &resp["choices"][0];
        assert_ne!(c["finish_reason"], "stop", "{c}");
        for call in c["message"]["tool_calls"].as_array().into_iter().flatten() {
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
            assert!(args.is_object(), "{call}");
            called += 1;
        }
    }
    assert!(called > 0);
    let tools = json!([{"type": "function", "function": {"name": "ping", "parameters": {"type": "string"}}}]);
    let (status, resp) = server.post(
        "/v1/chat/completions",
        &json!({"messages": messages, "tools": tools}),
    );
    assert_eq!(
        (status, resp["error"]["param"].as_str()),
        (400, Some("tools")),
        "{resp}"
    );
}
