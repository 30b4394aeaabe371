//! The chat template, tokenizer and detokenizer against transformers' goldens.

use std::path::PathBuf;

use medgemma_preprocess::{IncrementalDetokenizer, TemplateMessage, TextProcessor};
use serde_json::Value;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn load(ckpt: &str) -> (TextProcessor, Value) {
    let dir = fixture(ckpt);
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("goldens.json")).unwrap()).unwrap();
    (TextProcessor::load(&dir, &[]).unwrap(), g)
}

fn messages(v: &Value) -> Vec<TemplateMessage> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| TemplateMessage {
            role: m["role"].as_str().unwrap().into(),
            content: m["content"].clone(),
        })
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn rendered_prompts_and_ids_equal_transformers() {
    for ckpt in ["tiny-gemma3", "tiny-gemma3-text"] {
        let (text, g) = load(ckpt);
        for (name, p) in g["prompts"].as_object().unwrap() {
            let rendered = text.render_chat(&messages(&p["messages"]), true).unwrap();
            assert_eq!(rendered, p["rendered"].as_str().unwrap(), "{ckpt}/{name}");
            assert_eq!(
                text.encode(&rendered).unwrap(),
                ids(&p["input_ids"]),
                "{ckpt}/{name}"
            );
        }
    }
}

#[test]
fn special_tokens_come_from_the_checkpoint() {
    let (text, _) = load("tiny-gemma3");
    let s = text.special();
    assert_eq!(s.bos_token, "<bos>");
    let eot = text.token_to_id("<end_of_turn>").unwrap();
    let eos = text.token_to_id("<eos>").unwrap();
    assert_eq!(s.stop_token_ids, vec![eos, eot]);
    // The tokenizer's own post-processor adds BOS; chat prompts must not get a second one.
    let with = text.encode_with("Hi", true).unwrap();
    assert_eq!(with[0], text.token_to_id("<bos>").unwrap());
    assert_eq!(with[1..], text.encode("Hi").unwrap()[..]);
}

#[test]
fn streamed_deltas_concatenate_to_the_full_decode() {
    let (text, g) = load("tiny-gemma3");
    for (name, p) in g["prompts"].as_object().unwrap() {
        for key in ["greedy_ids", "input_ids"] {
            let all = ids(&p[key]);
            let mut d = IncrementalDetokenizer::new(true);
            let mut streamed = String::new();
            for &id in &all {
                let delta = d.push(&text, id).unwrap();
                assert!(
                    !delta.contains('\u{FFFD}')
                        || text.decode(&all, true).unwrap().contains('\u{FFFD}')
                );
                streamed.push_str(&delta);
            }
            streamed.push_str(&d.finish(&text).unwrap());
            assert_eq!(streamed, text.decode(&all, true).unwrap(), "{name}/{key}");
        }
        let want = p["greedy_text"].as_str().unwrap();
        assert_eq!(
            text.decode(&ids(&p["greedy_ids"]), false).unwrap(),
            want,
            "{name}: transformers' decode"
        );
    }
}

#[test]
fn multibyte_characters_are_held_back_until_complete() {
    let (text, _) = load("tiny-gemma3");
    let s = "🩺 fièvre 発熱";
    let all = text.encode(s).unwrap();
    let mut d = IncrementalDetokenizer::new(true);
    let mut out = String::new();
    for &id in &all {
        let delta = d.push(&text, id).unwrap();
        assert!(
            !delta.contains('\u{FFFD}'),
            "partial character emitted: {delta:?}"
        );
        out.push_str(&delta);
    }
    out.push_str(&d.finish(&text).unwrap());
    assert_eq!(out, s);
}
