//! POST /v1/completions: raw prompts (text or token ids), plain and streamed.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use medgemma_core::Prompt;
use medgemma_protocol::chat::Usage;
use medgemma_protocol::completion::{
    Completion, CompletionChoice, CompletionLogprobs, OnePrompt, ValidCompletion,
};
use medgemma_protocol::{unix_time, CompletionRequest};
use serde_json::{Map, Value};

use crate::access::{with_counts, with_streamed_counts, TokenCounts};
use crate::error::ApiError;
use crate::generation::{check_fan_out, sampling_params, submit, TextStream, TokenInfo, Totals};
use crate::prompt::max_new_tokens;
use crate::quota::KeyPriority;
use crate::sse::{chunk_event, failed_event, json_event, sse_response};
use crate::state::{AppState, Engine};
use crate::text_offset::TextOffsets;

pub async fn completions(
    State(state): State<Arc<AppState>>,
    priority: Option<Extension<KeyPriority>>,
    body: Bytes,
) -> Response {
    let priority = priority.map_or(0, |p| p.0 .0);
    let started = crate::state::prepare(&state, body, move |s, b| start(s, b, priority)).await;
    let resp = match started {
        Ok(run) if run.req.stream => {
            let prompt_tokens = run.prompt_tokens;
            let total = Arc::new(Mutex::new(Totals::default()));
            let resp = stream_response(state.clone(), run, total.clone()).into_response();
            with_streamed_counts(resp, prompt_tokens, total)
        }
        Ok(run) => {
            let prompt_tokens = run.prompt_tokens;
            match collect(&state, run).await {
                Ok(c) => {
                    let completion_tokens = c.usage.map(|u| u.completion_tokens);
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

struct Choice {
    stream: TextStream,
    /// The first of its prompt's `n` choices (which counts the cached tokens).
    first_of_prompt: bool,
    echo: String,
    /// Where the next token's text starts, for `text_offset`.
    offsets: TextOffsets,
}

struct Run {
    id: String,
    req: ValidCompletion,
    choices: Vec<Choice>,
    prompt_tokens: usize,
}

fn prompt_ids(p: &OnePrompt, engine: &Engine) -> Result<Vec<u32>, ApiError> {
    let ids = match p {
        OnePrompt::Text(t) => engine.text.encode_with(t, true)?,
        OnePrompt::Ids(ids) => match ids.iter().find(|&&i| i as usize >= engine.vocab_size) {
            Some(bad) => {
                return Err(ApiError::bad_request(
                    format!("prompt token {bad} is outside the vocabulary"),
                    Some("prompt"),
                ))
            }
            None => ids.clone(),
        },
    };
    crate::prompt::refuse_image_tokens(engine, &ids, "prompt")?;
    Ok(ids)
}

fn start(state: &AppState, body: &[u8], priority: i32) -> Result<Run, ApiError> {
    let req: CompletionRequest = medgemma_protocol::parse_request(body)?;
    state.check_model(req.model.as_deref())?;
    let req = req.validate()?;
    let engine = state.engine()?;
    let sequences = req.prompts.len() * req.sampling.n;
    let param = if req.prompts.len() > 1 { "prompt" } else { "n" };
    check_fan_out(engine, sequences, param)?;
    let id = state.request_id("cmpl");
    let mut choices = Vec::new();
    let mut prompt_tokens = 0;
    let requested = req.sampling.max_tokens.or(Some(
        medgemma_protocol::completion::DEFAULT_COMPLETION_TOKENS,
    ));
    for p in &req.prompts {
        let ids = prompt_ids(p, engine)?;
        let max_new = max_new_tokens(ids.len(), requested, engine).map_err(|mut e| {
            if e.param.as_deref() == Some("messages") {
                e.param = Some("prompt".into());
            }
            e
        })?;
        prompt_tokens += ids.len();
        let echo = if req.echo {
            engine.text.decode(&ids, true)?
        } else {
            String::new()
        };
        for i in 0..req.sampling.n {
            let params = sampling_params(&req.sampling, engine, state, i, req.logprobs, None)?;
            let prompt = Prompt {
                token_ids: ids.clone(),
                images: Vec::new(),
            };
            let events = submit(
                engine,
                &id,
                prompt,
                params,
                &req.sampling,
                max_new,
                priority,
            )?;
            let stream = TextStream::new(events, engine.text.clone(), req.sampling.stop.clone());
            choices.push(Choice {
                stream,
                first_of_prompt: i == 0,
                offsets: TextOffsets::new(echo.chars().count()),
                echo: echo.clone(),
            });
        }
    }
    Ok(Run {
        id,
        req,
        choices,
        prompt_tokens,
    })
}

/// The legacy logprobs of `tokens`, the next of the choice's tokens.
fn legacy_logprobs(tokens: &[TokenInfo], c: &mut Choice) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    for t in tokens {
        out.tokens.push(t.text.clone());
        out.token_logprobs.push(Some(t.logprobs.logprob));
        let top: Map<String, Value> = t
            .logprobs
            .top
            .iter()
            .map(|&(id, lp)| (c.stream.token_text(id), Value::from(lp as f64)))
            .collect();
        out.top_logprobs.push(Some(top));
        out.text_offset.push(c.offsets.next(&t.bytes));
    }
    out
}

async fn collect(state: &AppState, run: Run) -> Result<Completion, ApiError> {
    let mut choices = Vec::new();
    let mut totals = Totals::default();
    for (index, mut c) in run.choices.into_iter().enumerate() {
        let mut text = c.echo.clone();
        let mut tokens = Vec::new();
        let finish = loop {
            let piece = c.stream.next(state).await?;
            text.push_str(&piece.text);
            tokens.extend(piece.tokens);
            if let Some(f) = piece.finish {
                break f;
            }
        };
        totals.add(&c.stream, c.first_of_prompt);
        choices.push(CompletionChoice {
            index,
            logprobs: run.req.logprobs.map(|_| legacy_logprobs(&tokens, &mut c)),
            text,
            finish_reason: Some(finish.as_str().to_string()),
        });
    }
    Ok(Completion {
        id: run.id,
        object: "text_completion",
        created: unix_time(),
        model: state.model_name.clone(),
        choices,
        usage: Some(Usage::new(
            run.prompt_tokens,
            totals.completion,
            totals.cached,
        )),
    })
}

fn chunk(
    state: &AppState,
    id: &str,
    created: u64,
    index: usize,
    text: String,
    lp: Option<CompletionLogprobs>,
    finish: Option<String>,
) -> Completion {
    Completion {
        id: id.to_string(),
        object: "text_completion",
        created,
        model: state.model_name.clone(),
        choices: vec![CompletionChoice {
            index,
            text,
            logprobs: lp,
            finish_reason: finish,
        }],
        usage: None,
    }
}

/// `total`: where the choices add their token counts as they finish.
fn stream_response(
    state: Arc<AppState>,
    run: Run,
    total: Arc<Mutex<Totals>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let created = unix_time();
    let want_lp = run.req.logprobs.is_some();
    let choices: Vec<_> = run
        .choices
        .into_iter()
        .enumerate()
        .map(|(index, c)| {
            let (state, id, total) = (state.clone(), run.id.clone(), total.clone());
            let init = (c, false, false);
            stream::unfold(init, move |(mut c, echoed, done)| {
                let (state, id, total) = (state.clone(), id.clone(), total.clone());
                async move {
                    if done {
                        return None;
                    }
                    if !echoed && !c.echo.is_empty() {
                        let e = chunk_event(&chunk(
                            &state,
                            &id,
                            created,
                            index,
                            c.echo.clone(),
                            None,
                            None,
                        ));
                        return Some((e, (c, true, false)));
                    }
                    loop {
                        let piece = match c.stream.next(&state).await {
                            Ok(p) => p,
                            Err(e) => return Some((failed_event(&e), (c, true, true))),
                        };
                        let finish = piece.finish.map(|f| f.as_str().to_string());
                        if piece.text.is_empty() && piece.tokens.is_empty() && finish.is_none() {
                            continue;
                        }
                        if finish.is_some() {
                            if let Ok(mut t) = total.lock() {
                                t.add(&c.stream, c.first_of_prompt);
                            }
                        }
                        let lp = want_lp.then(|| legacy_logprobs(&piece.tokens, &mut c));
                        let done = finish.is_some();
                        let e = chunk_event(&chunk(
                            &state, &id, created, index, piece.text, lp, finish,
                        ));
                        return Some((e, (c, true, done)));
                    }
                }
            })
            .boxed()
        })
        .collect();
    let usage = run.req.include_usage.then(|| {
        let (id, model, prompt_tokens) =
            (run.id.clone(), state.model_name.clone(), run.prompt_tokens);
        Box::new(move || {
            let t = total.lock().map(|t| *t).unwrap_or_default();
            json_event(&Completion {
                id,
                object: "text_completion",
                created,
                model,
                choices: vec![],
                usage: Some(Usage::new(prompt_tokens, t.completion, t.cached)),
            })
        }) as Box<dyn FnOnce() -> Event + Send>
    });
    sse_response(choices, usage)
}
