//! Submitting a prompt to the scheduler and turning its token events into text:
//! incremental detokenization, stop strings (matched across token boundaries and
//! never emitted), logprobs, and the finish reason.

use std::sync::Arc;
use std::time::Instant;

use medgemma_core::{
    Constraint, FinishReason, GenerateRequest, Prompt, SamplingParams, StopCriteria, TokenEvent,
    TokenLogprobs,
};
use medgemma_preprocess::{IncrementalDetokenizer, OutputRule, TextProcessor};
use medgemma_protocol::{OutputFormat, ValidSampling, ValidTools};
use medgemma_scheduler::EventStream;

use crate::error::ApiError;
use crate::state::{AppState, Engine};

/// The engine's sampling parameters for choice `index` of a request.
pub fn sampling_params(
    v: &ValidSampling,
    engine: &Engine,
    state: &AppState,
    index: usize,
    logprobs: Option<usize>,
    tools: Option<&ValidTools>,
) -> Result<SamplingParams, ApiError> {
    let d = &engine.defaults;
    if let Some((id, _)) = v
        .logit_bias
        .iter()
        .find(|(id, _)| *id as usize >= engine.vocab_size)
    {
        return Err(ApiError::bad_request(
            format!(
                "logit_bias names token {id}, outside the vocabulary of {} tokens",
                engine.vocab_size
            ),
            Some("logit_bias"),
        ));
    }
    Ok(SamplingParams {
        temperature: v.temperature.unwrap_or(d.temperature),
        top_p: v.top_p.unwrap_or(d.top_p),
        top_k: v.top_k.unwrap_or(d.top_k),
        min_p: v.min_p,
        seed: v.seed.or(state.seed).map(|s| s.wrapping_add(index as u64)),
        logit_bias: v.logit_bias.clone(),
        repetition_penalty: v.repetition_penalty,
        frequency_penalty: v.frequency_penalty,
        presence_penalty: v.presence_penalty,
        logprobs,
        suppress_tokens: Vec::new(),
        min_tokens: v.min_tokens,
        end_tokens: match v.min_tokens {
            0 => Vec::new(),
            _ => engine.text.special().stop_token_ids.clone(),
        },
        constraint: constraint(&v.format, tools, &engine.text)?,
    })
}

/// The constraint of a JSON `response_format` and of the tools the model may
/// call; a schema that cannot be enforced is refused, naming the part of it
/// that cannot.
fn constraint(
    format: &OutputFormat,
    tools: Option<&ValidTools>,
    text: &TextProcessor,
) -> Result<Option<Constraint>, ApiError> {
    let answer = match format {
        OutputFormat::Text => None,
        OutputFormat::JsonObject => Some(None),
        OutputFormat::JsonSchema { schema, .. } => Some(Some(schema)),
    };
    let specs = tools.map(crate::tools::specs).unwrap_or_default();
    let rule = match tools {
        Some(t) => crate::tools::rule(t, &specs, answer),
        None => OutputRule {
            answer,
            tools: None,
        },
    };
    text.output_constraint(&rule)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.param)))
}

/// Refuses a request that needs more sequences (prompts × `n`) than the queue
/// can ever hold: it would only ever get 429 "retry later".
pub fn check_fan_out(engine: &Engine, sequences: usize, param: &str) -> Result<(), ApiError> {
    let most = engine.scheduler.config().max_waiting;
    if sequences > most {
        return Err(ApiError::bad_request(
            format!(
                "the request needs {sequences} sequences (prompts × n); the server queues at \
                 most {most} at once (--max-waiting): split it into smaller requests"
            ),
            Some(param),
        ));
    }
    Ok(())
}

/// Submits one choice's request.
pub fn submit(
    engine: &Engine,
    id: &str,
    prompt: Prompt,
    sampling: SamplingParams,
    v: &ValidSampling,
    max_new_tokens: usize,
    priority: i32,
) -> Result<EventStream, ApiError> {
    let req = GenerateRequest {
        id: id.to_string(),
        prompt,
        sampling,
        stop: StopCriteria {
            stop_token_ids: engine.text.special().stop_token_ids.clone(),
            stop_strings: v.stop.clone(),
            ignore_eos: v.ignore_eos,
        },
        max_new_tokens,
        arrival: Instant::now(),
        cache_salt: v.cache_salt.clone(),
        priority,
    };
    Ok(engine.scheduler.submit(req)?)
}

/// One token's log probabilities with token strings.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub id: u32,
    pub text: String,
    pub bytes: Vec<u8>,
    pub logprobs: TokenLogprobs,
}

/// What a choice produced since the last call.
#[derive(Debug, Default)]
pub struct Piece {
    pub text: String,
    pub tokens: Vec<TokenInfo>,
    pub finish: Option<FinishReason>,
    pub completion_tokens: usize,
}

/// Text out of a choice's event stream.
pub struct TextStream {
    events: Option<EventStream>,
    text: Arc<TextProcessor>,
    detok: IncrementalDetokenizer,
    stop: Vec<String>,
    /// Text decoded but not yet emitted (it may begin a stop string).
    held: String,
    generated: usize,
    cached: usize,
    pub started: Instant,
    pub first_token: Option<Instant>,
    pub last_token: Option<Instant>,
}

impl TextStream {
    pub fn new(events: EventStream, text: Arc<TextProcessor>, stop: Vec<String>) -> Self {
        Self {
            events: Some(events),
            text,
            detok: IncrementalDetokenizer::new(true),
            stop,
            held: String::new(),
            generated: 0,
            cached: 0,
            started: Instant::now(),
            first_token: None,
            last_token: None,
        }
    }

    /// Waits for the next token (or the end) and returns the text it releases.
    pub async fn next(&mut self, state: &AppState) -> Result<Piece, ApiError> {
        let Some(events) = self.events.as_mut() else {
            return Ok(Piece {
                finish: Some(FinishReason::Stop),
                ..Piece::default()
            });
        };
        let event = match state.request_timeout {
            Some(limit) => {
                match tokio::time::timeout_at((self.started + limit).into(), events.next()).await {
                    Ok(e) => e,
                    Err(_) => {
                        // Dropping the stream cancels the sequence in the engine.
                        self.events = None;
                        return Err(ApiError::new(
                            axum::http::StatusCode::GATEWAY_TIMEOUT,
                            format!(
                                "the request ran past the server's limit of {} s",
                                limit.as_secs_f64()
                            ),
                        )
                        .with_code("timeout"));
                    }
                }
            }
            None => events.next().await,
        };
        match event {
            Some(TokenEvent::Token { id, logprobs }) => {
                self.observe_timing(state);
                self.generated += 1;
                let delta = self.detok.push(&self.text, id)?;
                let tokens = logprobs
                    .map(|lp| self.token_info(id, lp))
                    .into_iter()
                    .collect();
                Ok(self.release(delta, false, tokens))
            }
            Some(TokenEvent::Finished {
                reason: FinishReason::Cancelled,
                ..
            }) => {
                self.events = None;
                Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the server is shutting down; this request was ended before it finished",
                )
                .with_code("server_shutdown"))
            }
            Some(TokenEvent::Finished { reason, usage }) => {
                // The engine's count includes an end-of-sequence token, which
                // has no token event of its own.
                self.generated = self.generated.max(usage.completion_tokens);
                self.cached = usage.cached_tokens;
                let rest = self.detok.finish(&self.text)?;
                let mut piece = self.release(rest, true, Vec::new());
                piece.finish = piece.finish.or(Some(reason));
                Ok(piece)
            }
            Some(TokenEvent::Failed(msg)) => {
                self.events = None;
                Err(ApiError::internal(format!("generation failed: {msg}")))
            }
            None => {
                self.events = None;
                Err(ApiError::internal(
                    "the engine ended the request without finishing it",
                ))
            }
        }
    }

    fn observe_timing(&mut self, state: &AppState) {
        let now = Instant::now();
        match self.last_token {
            None => state
                .metrics
                .time_to_first_token
                .observe((now - self.started).as_secs_f64()),
            Some(last) => state
                .metrics
                .inter_token_latency
                .observe((now - last).as_secs_f64()),
        }
        self.first_token.get_or_insert(now);
        self.last_token = Some(now);
    }

    fn token_info(&self, id: u32, logprobs: TokenLogprobs) -> TokenInfo {
        TokenInfo {
            id,
            text: self.token_text(id),
            bytes: self.text.token_bytes(id),
            logprobs,
        }
    }

    /// A token's text; a token holding part of a UTF-8 character shows its bytes
    /// as `bytes:\xNN` (as OpenAI does), never U+FFFD.
    pub fn token_text(&self, id: u32) -> String {
        let bytes = self.text.token_bytes(id);
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                let hex: String = e
                    .into_bytes()
                    .iter()
                    .map(|b| format!("\\x{b:02x}"))
                    .collect();
                format!("bytes:{hex}")
            }
        }
    }

    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.text.token_bytes(id)
    }

    /// Adds decoded text; emits what can no longer start a stop string.
    fn release(&mut self, delta: String, at_end: bool, tokens: Vec<TokenInfo>) -> Piece {
        self.held.push_str(&delta);
        let mut piece = Piece {
            tokens,
            completion_tokens: self.generated,
            ..Piece::default()
        };
        if let Some(pos) = self.first_stop() {
            piece.text = self.held[..pos].to_string();
            self.held.clear();
            piece.finish = Some(FinishReason::Stop);
            // Dropping the stream cancels the sequence in the engine.
            self.events = None;
            return piece;
        }
        let keep = if at_end { 0 } else { self.partial_stop_len() };
        let cut = self.held.len() - keep;
        piece.text = self.held[..cut].to_string();
        self.held.drain(..cut);
        piece
    }

    fn first_stop(&self) -> Option<usize> {
        self.stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Length of the longest end of `held` that begins some stop string.
    fn partial_stop_len(&self) -> usize {
        let mut best = 0;
        for s in &self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if i > best && self.held.ends_with(&s[..i]) {
                    best = i;
                }
            }
        }
        best
    }

    pub fn completion_tokens(&self) -> usize {
        self.generated
    }

    /// Prompt tokens the engine found in the prefix cache (once finished).
    pub fn cached_tokens(&self) -> usize {
        self.cached
    }
}

/// Token counts of a request's choices, as they finish.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub completion: usize,
    pub cached: usize,
}

impl Totals {
    /// Adds a finished choice; the cached prompt tokens count once per prompt
    /// (from its first choice), as the prompt tokens do.
    pub fn add(&mut self, stream: &TextStream, first_of_prompt: bool) {
        self.completion += stream.completion_tokens();
        if first_of_prompt {
            self.cached += stream.cached_tokens();
        }
    }
}
