//! Prefix caching on the real binary: a repeated prompt, a next turn and a
//! repeated image start from cached KV blocks, report them in
//! `usage.prompt_tokens_details.cached_tokens`, and still give transformers'
//! numbers.

mod common;

use common::{goldens, Server};
use serde_json::{json, Map, Value};

const BLOCK: usize = 16;

fn eos_bias(g: &Value) -> Map<String, Value> {
    g["eos_suppressed_in_greedy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| (id.to_string(), json!(-100)))
        .collect()
}

/// Sends a golden prompt greedily with logprobs; checks them against
/// transformers' and returns the response.
fn golden_chat(
    server: &Server,
    messages: Value,
    p: &Value,
    bias: &Map<String, Value>,
    ctx: &str,
) -> Value {
    let steps = p["greedy_ids"].as_array().unwrap().len();
    let body = json!({
        "messages": messages, "temperature": 0, "max_tokens": steps, "logprobs": true,
        "top_logprobs": 5, "logit_bias": bias, "do_pan_and_scan": p["do_pan_and_scan"],
    });
    let (status, resp) = server.post("/v1/chat/completions", &body);
    assert_eq!(status, 200, "{resp}");
    let content = resp["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), steps);
    for (step, entry) in content.iter().enumerate() {
        let want = p["greedy_top5"][step][0][1].as_f64().unwrap();
        // transformers' most likely token (an end-of-turn token the bias keeps
        // from being picked may lead).
        let got = entry["top_logprobs"][0]["logprob"].as_f64().unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "{ctx} step {step}: {got} vs {want}"
        );
    }
    resp
}

fn cached(resp: &Value) -> usize {
    resp["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("no cached_tokens in {resp}")) as usize
}

/// The longest whole-block prefix that leaves a token to run and does not end
/// inside a run of image soft tokens.
fn expected_hit(ids: &[Value], image_token: u64) -> usize {
    let is_image = |i: usize| ids[i].as_u64() == Some(image_token);
    (1..=(ids.len() - 1) / BLOCK)
        .rev()
        .map(|k| k * BLOCK)
        .find(|&pos| !(is_image(pos - 1) && is_image(pos)))
        .unwrap_or(0)
}

#[test]
fn repeated_text_and_image_prompts_reuse_their_blocks_with_the_same_numbers() {
    let server = Server::start("tiny-gemma3", &[]);
    let image_token = server
        .post("/tokenize", &json!({"prompt": "<image_soft_token>"}))
        .1["tokens"][0]
        .as_u64()
        .unwrap();
    for file in ["goldens.json", "image_goldens.json"] {
        let g: Value = serde_json::from_str(
            &std::fs::read_to_string(common::fixture("tiny-gemma3").join(file)).unwrap(),
        )
        .unwrap();
        let bias = eos_bias(&g);
        for (name, p) in g["prompts"].as_object().unwrap() {
            let messages = match p.get("images") {
                Some(_) => common::image_messages(p),
                None => p["messages"].clone(),
            };
            let first = golden_chat(
                &server,
                messages.clone(),
                p,
                &bias,
                &format!("{name} first"),
            );
            let again = golden_chat(&server, messages, p, &bias, &format!("{name} again"));
            let ids = p["input_ids"].as_array().unwrap();
            assert_eq!(cached(&again), expected_hit(ids, image_token), "{name}");
            assert_eq!(
                first["choices"][0]["message"], again["choices"][0]["message"],
                "{name}"
            );
        }
    }
    assert!(server.metric("medgemma_prefix_cache_hits_total") > 0.0);
    assert!(server.metric("medgemma_kv_blocks_cached") > 0.0);
    assert!(
        server.metric("medgemma_prefix_cache_queries_total")
            > server.metric("medgemma_prefix_cache_hits_total")
    );
}

/// A second turn on a server with and one without prefix caching: the same
/// log probabilities, the earlier turn found in the cache.
#[test]
fn a_next_turn_starts_from_the_previous_one() {
    let g = goldens("tiny-gemma3-text");
    let p = &g["prompts"]["long_past_window"];
    let with = Server::start("tiny-gemma3-text", &[]);
    let without = Server::start("tiny-gemma3-text", &["--no-prefix-caching"]);
    let ask = |server: &Server, messages: &Value, salt: Option<&str>| {
        let mut body = json!({
            "messages": messages, "temperature": 0, "max_tokens": 12,
            "logprobs": true, "top_logprobs": 3,
        });
        if let Some(s) = salt {
            body["cache_salt"] = json!(s);
        }
        let (status, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{resp}");
        resp
    };
    let first = ask(&with, &p["messages"], None);
    assert_eq!(cached(&first), 0);
    let answer = first["choices"][0]["message"]["content"].clone();
    let mut turn = p["messages"].as_array().unwrap().clone();
    turn.push(json!({"role": "assistant", "content": answer}));
    turn.push(json!({"role": "user", "content": "And the antibiotic?"}));
    let turn = Value::Array(turn);
    let second = ask(&with, &turn, None);
    let prompt_len = p["input_ids"].as_array().unwrap().len();
    assert!(
        cached(&second) >= prompt_len / BLOCK * BLOCK,
        "the first turn's blocks: {}",
        second["usage"]
    );
    let reference = ask(&without, &turn, None);
    assert_eq!(cached(&reference), 0);
    let lp = |r: &Value| -> Vec<f64> {
        r["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["logprob"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(
        second["choices"][0]["message"],
        reference["choices"][0]["message"]
    );
    for (a, b) in lp(&second).iter().zip(lp(&reference)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Penalties count the prompt's tokens, the cached ones included: a prompt
    // ending in what the model likes to say, in blocks cached by a first request.
    let mut ids = p["input_ids"].as_array().unwrap().clone();
    ids.extend(p["greedy_ids"].as_array().unwrap().iter().cloned());
    let complete = |server: &Server, ids: &[Value]| {
        let body = json!({
            "prompt": ids, "temperature": 0, "max_tokens": 12, "repetition_penalty": 2.0,
        });
        let (status, resp) = server.post("/v1/completions", &body);
        assert_eq!(status, 200, "{resp}");
        resp
    };
    complete(&with, &ids);
    ids.push(json!(ids[0]));
    let cached_run = complete(&with, &ids);
    assert!(cached(&cached_run) > prompt_len, "{}", cached_run["usage"]);
    assert_eq!(
        cached_run["choices"][0]["text"],
        complete(&without, &ids)["choices"][0]["text"]
    );
    // Another salt shares nothing with unsalted requests, or with another salt.
    assert_eq!(cached(&ask(&with, &turn, Some("ward-7"))), 0);
    assert!(cached(&ask(&with, &turn, Some("ward-7"))) > 0);
    assert_eq!(cached(&ask(&with, &turn, Some("ward-8"))), 0);
    let (status, resp) = with.post(
        "/v1/chat/completions",
        &json!({"messages": turn, "cache_salt": ""}),
    );
    assert_eq!(status, 400, "{resp}");
    assert_eq!(resp["error"]["param"], "cache_salt");
}

/// Waits for a counter to reach `want` (the engine publishes after its step).
fn wait_metric(server: &Server, name: &str, want: f64) {
    let start = std::time::Instant::now();
    while server.metric(name) != want {
        assert!(
            start.elapsed().as_secs() < 10,
            "{name}: {} not {want}",
            server.metric(name)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The same image after other text (no prefix to share) comes from the encoder
/// cache, within one cache salt.
#[test]
fn the_same_image_after_other_text_is_encoded_once_per_salt() {
    let server = Server::start("tiny-gemma3", &[]);
    let g: Value = common::image_goldens();
    let messages = common::image_messages(&g["prompts"]["one_image"]);
    let ask = |question: &str, salt: Option<&str>| {
        let mut m = messages.clone();
        let parts = m[0]["content"].as_array_mut().unwrap();
        parts.insert(0, json!({"type": "text", "text": question}));
        let mut body = json!({"messages": m, "max_tokens": 1});
        if let Some(s) = salt {
            body["cache_salt"] = json!(s);
        }
        let (status, resp) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{resp}");
        assert_eq!(cached(&resp), 0, "no prefix shared: {}", resp["usage"]);
    };
    ask("Is there a pneumothorax?", None);
    wait_metric(&server, "medgemma_images_encoded_total", 1.0);
    ask("Any effusion?", None);
    wait_metric(&server, "medgemma_encoder_cache_hits_total", 1.0);
    ask("Heart size?", Some("ward-7"));
    wait_metric(&server, "medgemma_images_encoded_total", 2.0);
    ask("Lines and tubes?", Some("ward-7"));
    wait_metric(&server, "medgemma_encoder_cache_hits_total", 2.0);
    assert_eq!(server.metric("medgemma_images_encoded_total"), 2.0);
}
