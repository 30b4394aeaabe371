//! POST /v1/chat/completions, plain and streamed.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use medgemma_core::FinishReason;
use medgemma_protocol::chat::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChunkChoice, Delta,
    TokenLogprob, TopLogprob, Usage, ValidChat,
};
use medgemma_protocol::{unix_time, ChatCompletionRequest, ToolCall, ValidTools};

use crate::access::{with_counts, with_streamed_counts, TokenCounts};
use crate::error::ApiError;
use crate::generation::{
    check_fan_out, sampling_params, submit, Piece, TextStream, TokenInfo, Totals,
};
use crate::prompt::{chat_prompt, max_new_tokens};
use crate::quota::KeyPriority;
use crate::sse::{chunk_event, failed_event, json_event, sse_response, ChoiceEvent};
use crate::state::AppState;
use crate::tools::parse_calls;
use medgemma_preprocess::call_opening::{opening, Opening};

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    priority: Option<Extension<KeyPriority>>,
    body: Bytes,
) -> Response {
    let priority = priority.map_or(0, |p| p.0 .0);
    let started = crate::state::prepare(&state, body, move |s, b| start(s, b, priority)).await;
    let resp = match started {
        Ok(run) if run.chat.stream => {
            let prompt_tokens = run.prompt_tokens;
            let total = Arc::new(Mutex::new(Totals::default()));
            let resp = stream_response(state.clone(), run, total.clone()).into_response();
            with_streamed_counts(resp, prompt_tokens, total)
        }
        Ok(run) => {
            let prompt_tokens = run.prompt_tokens;
            match collect(&state, run).await {
                Ok(c) => {
                    let completion_tokens = Some(c.usage.completion_tokens);
                    with_counts(
                        axum::Json(c).into_response(),
                        TokenCounts {
                            prompt_tokens,
                            completion_tokens,
                        },
                    )
                }
                Err(e) => e.into_response(),
            }
        }
        Err(e) => e.into_response(),
    };
    resp
}

/// A validated, submitted chat request.
struct Run {
    id: String,
    chat: ValidChat,
    streams: Vec<TextStream>,
    prompt_tokens: usize,
}

fn start(state: &AppState, body: &[u8], priority: i32) -> Result<Run, ApiError> {
    let req: ChatCompletionRequest = medgemma_protocol::parse_request(body)?;
    state.check_model(req.model.as_deref())?;
    let chat = req.validate()?;
    let engine = state.engine()?;
    // Every choice's parameters first: their schemas (response format, tools)
    // are checked before the prompt is built.
    let tools = chat.tools.as_ref();
    let params = (0..chat.sampling.n)
        .map(|i| sampling_params(&chat.sampling, engine, state, i, chat.logprobs, tools))
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = chat_prompt(&chat, state, engine)?;
    let prompt_tokens = prompt.token_ids.len();
    let max_new = max_new_tokens(prompt_tokens, chat.sampling.max_tokens, engine)?;
    check_fan_out(engine, chat.sampling.n, "n")?;
    let id = state.request_id("chatcmpl");
    let mut streams = Vec::with_capacity(chat.sampling.n);
    for p in params {
        let events = submit(
            engine,
            &id,
            prompt.clone(),
            p,
            &chat.sampling,
            max_new,
            priority,
        )?;
        streams.push(TextStream::new(
            events,
            engine.text.clone(),
            chat.sampling.stop.clone(),
        ));
    }
    tracing::info!(request_id = %id, prompt_tokens, n = chat.sampling.n, stream = chat.stream, "chat completion accepted");
    Ok(Run {
        id,
        chat,
        streams,
        prompt_tokens,
    })
}

pub fn chat_logprobs(tokens: &[TokenInfo], stream: &TextStream) -> ChatLogprobs {
    ChatLogprobs {
        content: tokens
            .iter()
            .map(|t| TokenLogprob {
                token: t.text.clone(),
                logprob: t.logprobs.logprob,
                bytes: t.bytes.clone(),
                top_logprobs: t
                    .logprobs
                    .top
                    .iter()
                    .map(|&(id, lp)| TopLogprob {
                        token: stream.token_text(id),
                        bytes: stream.token_bytes(id),
                        logprob: lp,
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn collect(state: &AppState, run: Run) -> Result<ChatCompletion, ApiError> {
    let mut choices = Vec::with_capacity(run.streams.len());
    let mut totals = Totals::default();
    for (index, mut s) in run.streams.into_iter().enumerate() {
        let mut text = String::new();
        let mut logprobs = ChatLogprobs::default();
        let finish = loop {
            let piece = s.next(state).await?;
            text.push_str(&piece.text);
            logprobs
                .content
                .extend(chat_logprobs(&piece.tokens, &s).content);
            if let Some(f) = piece.finish {
                break f;
            }
        };
        totals.add(&s, index == 0);
        state
            .metrics
            .request_latency
            .observe(s.started.elapsed().as_secs_f64());
        let (message, finish) = answer(text, finish, run.chat.tools.as_ref(), &run.id, index);
        choices.push(ChatChoice {
            index,
            message,
            logprobs: run.chat.logprobs.map(|_| logprobs),
            finish_reason: Some(finish),
        });
    }
    tracing::info!(
        request_id = %run.id,
        prompt_tokens = run.prompt_tokens,
        cached_tokens = totals.cached,
        completion_tokens = totals.completion,
        "chat completion done"
    );
    Ok(ChatCompletion {
        id: run.id,
        object: "chat.completion",
        created: unix_time(),
        model: state.model_name.clone(),
        choices,
        usage: Usage::new(run.prompt_tokens, totals.completion, totals.cached),
        system_fingerprint: None,
    })
}

/// A finished choice's message: its tool calls if the request has tools and the
/// answer is a finished list of calls, else its text.
fn answer(
    text: String,
    finish: FinishReason,
    tools: Option<&ValidTools>,
    id: &str,
    index: usize,
) -> (AssistantMessage, String) {
    let calls = tools
        .filter(|_| finish == FinishReason::Stop)
        .and_then(|t| parse_calls(&text, t, id, index));
    match calls {
        Some(tool_calls) => (
            AssistantMessage {
                role: "assistant",
                content: None,
                tool_calls,
            },
            "tool_calls".to_string(),
        ),
        None => (
            AssistantMessage {
                role: "assistant",
                content: Some(text),
                tool_calls: Vec::new(),
            },
            finish.as_str().to_string(),
        ),
    }
}

/// Whether a streamed choice passes its text on as it comes, or holds it back
/// because it may be tool calls (sent whole, once the list is finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passing {
    /// Tools may be called and the answer has not shown yet whether it opens a
    /// list (blanks, or part of a code fence, so far): held.
    Undecided,
    /// The answer opened a list (bare or fenced): held until it ends.
    Holding,
    Yes,
}

/// Per-choice streaming state.
struct ChoiceStream {
    state: Arc<AppState>,
    stream: TextStream,
    index: usize,
    id: String,
    created: u64,
    logprobs: bool,
    sent_role: bool,
    done: bool,
    total: Arc<Mutex<Totals>>,
    tools: Option<Arc<ValidTools>>,
    passing: Passing,
    held_text: String,
    held_logprobs: Vec<TokenLogprob>,
    /// The finish chunk that follows a chunk of tool calls (as OpenAI sends it:
    /// clients close the last call when they see it).
    pending: Option<ChatChunk>,
}

impl ChoiceStream {
    fn chunk(
        &self,
        delta: Delta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<String>,
    ) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.state.model_name.clone(),
            choices: vec![ChunkChoice {
                index: self.index,
                delta,
                logprobs,
                finish_reason: finish,
            }],
            usage: None,
        }
    }

    async fn next_event(mut self) -> Option<(ChoiceEvent, Self)> {
        if let Some(last) = self.pending.take() {
            return Some((chunk_event(&last), self));
        }
        if self.done {
            return None;
        }
        if !self.sent_role {
            self.sent_role = true;
            // An answer that may be tool calls starts with no content (null).
            let delta = Delta {
                role: Some("assistant"),
                content: Some(self.tools.is_none().then(String::new)),
                tool_calls: Vec::new(),
            };
            return Some((chunk_event(&self.chunk(delta, None, None)), self));
        }
        loop {
            let piece: Piece = match self.stream.next(&self.state).await {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    return Some((failed_event(&e), self));
                }
            };
            let finish = piece.finish.map(|f| f.as_str().to_string());
            if piece.text.is_empty() && piece.tokens.is_empty() && finish.is_none() {
                continue;
            }
            let logprobs = self
                .logprobs
                .then(|| chat_logprobs(&piece.tokens, &self.stream));
            if finish.is_some() {
                self.done = true;
                if let Ok(mut t) = self.total.lock() {
                    t.add(&self.stream, self.index == 0);
                }
                self.state
                    .metrics
                    .request_latency
                    .observe(self.stream.started.elapsed().as_secs_f64());
            }
            if self.passing != Passing::Yes {
                self.held_text.push_str(&piece.text);
                self.held_logprobs
                    .extend(logprobs.map(|l| l.content).unwrap_or_default());
                if self.passing == Passing::Undecided {
                    self.passing = match opening(&self.held_text) {
                        Opening::Undecided(_) => Passing::Undecided,
                        Opening::List { .. } => Passing::Holding,
                        Opening::Text => Passing::Yes,
                    };
                }
                if self.passing == Passing::Yes || piece.finish.is_some() {
                    let chunk = self.release(piece.finish);
                    return Some((chunk_event(&chunk), self));
                }
                continue;
            }
            let content = (!piece.text.is_empty()).then_some(Some(piece.text));
            let chunk = self.chunk(
                Delta {
                    role: None,
                    content,
                    tool_calls: Vec::new(),
                },
                logprobs,
                finish,
            );
            return Some((chunk_event(&chunk), self));
        }
    }

    /// The held text: as tool calls if it is a finished list of them, else as text.
    fn release(&mut self, finish: Option<FinishReason>) -> ChatChunk {
        let text = std::mem::take(&mut self.held_text);
        let logprobs = self.logprobs.then(|| ChatLogprobs {
            content: std::mem::take(&mut self.held_logprobs),
        });
        let (delta, finish) = match finish {
            Some(f) => {
                let (m, f) = answer(text, f, self.tools.as_deref(), &self.id, self.index);
                let calls = m.tool_calls.into_iter().enumerate();
                let delta = Delta {
                    role: None,
                    content: m.content.filter(|c| !c.is_empty()).map(Some),
                    tool_calls: calls
                        .map(|(k, c)| ToolCall {
                            index: Some(k),
                            ..c
                        })
                        .collect(),
                };
                if !delta.tool_calls.is_empty() {
                    self.pending = Some(self.chunk(Delta::default(), None, Some(f)));
                    return self.chunk(delta, logprobs, None);
                }
                (delta, Some(f))
            }
            None => (
                Delta {
                    role: None,
                    content: (!text.is_empty()).then_some(Some(text)),
                    tool_calls: Vec::new(),
                },
                None,
            ),
        };
        self.chunk(delta, logprobs, finish)
    }
}

/// `total`: where the choices add their token counts as they finish.
fn stream_response(
    state: Arc<AppState>,
    run: Run,
    total: Arc<Mutex<Totals>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let created = unix_time();
    let tools = run.chat.tools.clone().map(Arc::new);
    let choices: Vec<_> = run
        .streams
        .into_iter()
        .enumerate()
        .map(|(index, stream)| {
            let c = ChoiceStream {
                state: state.clone(),
                stream,
                index,
                id: run.id.clone(),
                created,
                logprobs: run.chat.logprobs.is_some(),
                sent_role: false,
                done: false,
                total: total.clone(),
                tools: tools.clone(),
                passing: match tools {
                    Some(_) => Passing::Undecided,
                    None => Passing::Yes,
                },
                held_text: String::new(),
                held_logprobs: Vec::new(),
                pending: None,
            };
            stream::unfold(c, ChoiceStream::next_event).boxed()
        })
        .collect();
    let usage = run.chat.include_usage.then(|| {
        let (id, model, prompt_tokens) =
            (run.id.clone(), state.model_name.clone(), run.prompt_tokens);
        Box::new(move || {
            let t = total.lock().map(|t| *t).unwrap_or_default();
            json_event(&ChatChunk {
                id,
                object: "chat.completion.chunk",
                created,
                model,
                choices: vec![],
                usage: Some(Usage::new(prompt_tokens, t.completion, t.cached)),
            })
        }) as Box<dyn FnOnce() -> Event + Send>
    });
    sse_response(choices, usage)
}
