//! The checkpoint's tokenizer (tokenizer.json), its special tokens and its chat
//! template, loaded from the checkpoint folder. No token id is hard-coded.

use std::path::Path;
use std::sync::{Arc, Mutex};

use medgemma_core::Constraint;
use serde_json::Value as Json;
use tokenizers::Tokenizer;

use crate::error::PreprocessError;
use crate::json_mode::JsonVocab;
use crate::output_rule::{OutputRule, RuleError};
use crate::template::{ChatTemplate, TemplateMessage};

/// Output rules whose constraints (and masks) are kept.
const CONSTRAINTS_KEPT: usize = 16;

/// Special tokens the server needs, as the checkpoint defines them.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecialTokens {
    pub bos_token: String,
    pub eos_token: String,
    /// Every id that ends generation: generation_config.json, config.json and the eos token.
    pub stop_token_ids: Vec<u32>,
}

#[derive(Debug)]
pub struct TextProcessor {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    special: SpecialTokens,
    /// The vocabulary as constrained output walks it, built on first use.
    json: std::sync::OnceLock<Arc<JsonVocab>>,
    /// Constraints of the schemas used last, the newest last.
    constraints: Mutex<Vec<(String, Constraint)>>,
    /// Whether the decoder turns `<0xNN>` pieces into bytes (SentencePiece byte
    /// fallback, as Gemma's tokenizer does).
    byte_fallback: bool,
    /// Ids of the added tokens marked special (dropped by `skip_special_tokens`).
    special_ids: std::collections::HashSet<u32>,
}

impl TextProcessor {
    /// Loads `dir/tokenizer.json` and friends; `model_eos` are the config's eos ids.
    pub fn load(dir: &Path, model_eos: &[u32]) -> Result<Self, PreprocessError> {
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| PreprocessError::File {
            path: tok_path.display().to_string(),
            msg: e.to_string(),
        })?;
        let tok_config = read_json(&dir.join("tokenizer_config.json"))?;
        let gen_config = read_json(&dir.join("generation_config.json"))?;
        let token = |key: &str, default: &str| {
            tok_config
                .as_ref()
                .and_then(|c| c.get(key))
                .and_then(token_content)
                .unwrap_or_else(|| default.to_string())
        };
        let bos_token = token("bos_token", "<bos>");
        let eos_token = token("eos_token", "<eos>");
        let mut stop_token_ids: Vec<u32> = gen_config
            .as_ref()
            .and_then(|g| g.get("eos_token_id"))
            .map(ids_of)
            .unwrap_or_default();
        stop_token_ids.extend_from_slice(model_eos);
        stop_token_ids.extend(tokenizer.token_to_id(&eos_token));
        stop_token_ids.sort_unstable();
        stop_token_ids.dedup();
        let template = match ChatTemplate::find_source(dir, tok_config.as_ref()) {
            Ok(src) => Some(ChatTemplate::new(
                src,
                bos_token.clone(),
                eos_token.clone(),
            )?),
            Err(PreprocessError::NoChatTemplate) => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            template,
            special: SpecialTokens {
                bos_token,
                eos_token,
                stop_token_ids,
            },
            json: std::sync::OnceLock::new(),
            constraints: Mutex::new(Vec::new()),
            byte_fallback: decodes_byte_fallback(&tokenizer),
            special_ids: tokenizer
                .get_added_tokens_decoder()
                .into_iter()
                .filter(|(_, t)| t.special)
                .map(|(id, _)| id)
                .collect(),
            tokenizer,
        })
    }

    pub fn special(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Renders a conversation with the checkpoint's chat template.
    pub fn render_chat(
        &self,
        messages: &[TemplateMessage],
        add_generation_prompt: bool,
    ) -> Result<String, PreprocessError> {
        self.template
            .as_ref()
            .ok_or(PreprocessError::NoChatTemplate)?
            .render(messages, add_generation_prompt)
    }

    /// Tokenizes text that already carries its special tokens (a rendered template):
    /// no BOS is added, as transformers' apply_chat_template does.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, PreprocessError> {
        self.encode_with(text, false)
    }

    /// Tokenizes with or without the tokenizer's own special tokens (BOS).
    pub fn encode_with(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, PreprocessError> {
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| PreprocessError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; ids the tokenizer does not know (embedding padding rows) are skipped.
    pub fn decode(
        &self,
        ids: &[u32],
        skip_special_tokens: bool,
    ) -> Result<String, PreprocessError> {
        let known: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&i| self.tokenizer.id_to_token(i).is_some())
            .collect();
        self.tokenizer
            .decode(&known, skip_special_tokens)
            .map_err(|e| PreprocessError::Tokenizer(e.to_string()))
    }

    /// Whether `id` is a byte-fallback piece (`<0xNN>`) that the decoder turns into
    /// a byte. A run of them decodes as one: to its text when the run's bytes are
    /// valid UTF-8, else to one U+FFFD per byte (tokenizers' `ByteFallback`).
    pub fn is_fallback_byte(&self, id: u32) -> bool {
        self.byte_fallback
            && self
                .tokenizer
                .id_to_token(id)
                .is_some_and(|p| byte_fallback(&p).is_some())
    }

    /// Whether `decode` leaves `id` out: an id the tokenizer does not know, or a
    /// special token when `skip_special_tokens`.
    pub fn decodes_to_nothing(&self, id: u32, skip_special_tokens: bool) -> bool {
        (skip_special_tokens && self.special_ids.contains(&id))
            || self.tokenizer.id_to_token(id).is_none()
    }

    /// The raw bytes of one token (OpenAI logprobs' `bytes`): byte-fallback pieces
    /// (`<0xNN>`) and byte-level alphabets map back to their bytes, so a token
    /// holding part of a UTF-8 character is reported exactly.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(piece) = self.tokenizer.id_to_token(id) else {
            return Vec::new();
        };
        if let Some(b) = byte_fallback(&piece) {
            return vec![b];
        }
        if matches!(
            self.tokenizer.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        ) {
            if let Some(bytes) = crate::bytes::byte_level_bytes(&piece) {
                return bytes;
            }
        }
        self.decode(&[id], false).unwrap_or_default().into_bytes()
    }

    /// The vocabulary as constrained output walks it, built on first use (a walk
    /// of the vocabulary: special tokens are never text, every other token is its
    /// bytes).
    fn json_vocab(&self) -> &Arc<JsonVocab> {
        self.json.get_or_init(|| {
            let special: std::collections::HashSet<u32> = self
                .tokenizer
                .get_added_tokens_decoder()
                .into_iter()
                .filter(|(_, t)| t.special)
                .map(|(id, _)| id)
                .collect();
            let n = self.tokenizer.get_vocab_size(true) as u32;
            let bytes = (0..n)
                .map(|id| match special.contains(&id) {
                    true => Vec::new(),
                    false => self.token_bytes(id),
                })
                .collect();
            let eos = self.special.stop_token_ids.clone();
            Arc::new(JsonVocab::new(bytes, eos))
        })
    }

    /// The constraint of an output rule (`None` for free text). The constraints
    /// of the rules used last are kept, with the masks they have built.
    pub fn output_constraint(&self, rule: &OutputRule) -> Result<Option<Constraint>, RuleError> {
        if rule.is_free() {
            return Ok(None);
        }
        let key = rule.key();
        let mut kept = self.constraints.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = kept.iter().position(|(k, _)| *k == key) {
            let hit = kept.remove(i);
            kept.push(hit.clone());
            return Ok(Some(hit.1));
        }
        let compiled = rule.compile()?;
        let vocab = self.json_vocab();
        let constraint = match compiled.triggered {
            true => vocab.triggered_constraint(compiled.schema),
            false => vocab.constraint(compiled.schema),
        };
        if kept.len() >= CONSTRAINTS_KEPT {
            kept.remove(0);
        }
        kept.push((key, constraint.clone()));
        Ok(Some(constraint))
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }
}

fn read_json(path: &Path) -> Result<Option<Json>, PreprocessError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| PreprocessError::File {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| PreprocessError::File {
            path: path.display().to_string(),
            msg: format!("not valid JSON: {e}"),
        })
}

/// A special token given as a string or as `{"content": ...}`.
fn token_content(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(String::from),
        _ => None,
    }
}

fn ids_of(v: &Json) -> Vec<u32> {
    match v {
        Json::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Json::Array(a) => a
            .iter()
            .filter_map(Json::as_u64)
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the tokenizer's decoder (or a step of its sequence) is `ByteFallback`.
fn decodes_byte_fallback(tokenizer: &Tokenizer) -> bool {
    fn has(v: &Json) -> bool {
        match v {
            Json::Object(m) => {
                m.get("type").is_some_and(|t| t == "ByteFallback") || m.values().any(has)
            }
            Json::Array(a) => a.iter().any(has),
            _ => false,
        }
    }
    tokenizer
        .get_decoder()
        .and_then(|d| serde_json::to_value(d).ok())
        .is_some_and(|v| has(&v))
}

/// `<0xNN>` pieces of SentencePiece byte fallback.
fn byte_fallback(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}
