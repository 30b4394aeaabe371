//! Sampling fields shared by chat and text completions, and their validation.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ProtocolError;

/// `stop`: a string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingFields {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<StopField>,
    pub n: Option<i64>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub ignore_eos: Option<bool>,
    pub min_tokens: Option<i64>,
    pub user: Option<String>,
    pub cache_salt: Option<String>,
    /// `text` or `json_object` (JSON mode); a JSON schema is refused.
    pub response_format: Option<Value>,
}

/// Checked sampling values; `None` where the request left the server's default.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSampling {
    pub max_tokens: Option<usize>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repetition_penalty: f32,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub n: usize,
    pub logit_bias: Vec<(u32, f32)>,
    pub ignore_eos: bool,
    pub min_tokens: usize,
    /// Only requests with the same salt share prefix-cache blocks.
    pub cache_salt: Option<String>,
    /// `response_format: {"type": "json_object"}`: the answer is one JSON object.
    pub json_object: bool,
}

pub const MAX_N: i64 = 16;
pub const MAX_STOP: usize = 16;

fn range(param: &str, v: Option<f64>, lo: f64, hi: f64) -> Result<Option<f32>, ProtocolError> {
    match v {
        Some(x) if !(lo..=hi).contains(&x) || x.is_nan() => Err(ProtocolError::param(
            param,
            format!("'{param}' must be between {lo} and {hi}, got {x}"),
        )),
        other => Ok(other.map(|x| x as f32)),
    }
}

impl SamplingFields {
    /// Whether the answer must be one JSON object (`json_object`); `text` or none
    /// is free text. A JSON schema (structured output) is refused: a client that
    /// asks for one relies on it.
    fn json_object(&self) -> Result<bool, ProtocolError> {
        let Some(format) = self.response_format.as_ref().filter(|v| !v.is_null()) else {
            return Ok(false);
        };
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(false),
            Some("json_object") => Ok(true),
            kind => {
                let kind = kind.map_or("without a type".to_string(), |k| format!("{k:?}"));
                Err(ProtocolError::param(
                    "response_format",
                    format!(
                        "'response_format' {kind} is not supported: the server answers in free \
                         text or, with {{\"type\": \"json_object\"}}, one JSON object (describe \
                         the schema in the prompt)"
                    ),
                ))
            }
        }
    }

    pub fn validate(&self) -> Result<ValidSampling, ProtocolError> {
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => Some(("max_completion_tokens", v)),
            (None, Some(v)) => Some(("max_tokens", v)),
            _ => None,
        };
        if let Some((param, v)) = max_tokens {
            if v < 1 {
                return Err(ProtocolError::param(
                    param,
                    format!("'{param}' must be at least 1, got {v}"),
                ));
            }
        }
        let top_p = range("top_p", self.top_p, 0.0, 1.0)?;
        if top_p == Some(0.0) {
            return Err(ProtocolError::param(
                "top_p",
                "'top_p' must be greater than 0",
            ));
        }
        let top_k = match self.top_k {
            Some(k) if k < -1 => {
                return Err(ProtocolError::param(
                    "top_k",
                    format!("'top_k' must be -1 (off) or at least 0, got {k}"),
                ))
            }
            Some(k) if k <= 0 => Some(0),
            Some(k) => Some(k as usize),
            None => None,
        };
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(ProtocolError::param(
                "n",
                format!("'n' must be between 1 and {MAX_N}, got {n}"),
            ));
        }
        let repetition_penalty = match self.repetition_penalty {
            Some(r) if !(r > 0.0 && r <= 10.0) => {
                return Err(ProtocolError::param(
                    "repetition_penalty",
                    format!("'repetition_penalty' must be in (0, 10], got {r}"),
                ))
            }
            Some(r) => r as f32,
            None => 1.0,
        };
        let min_tokens = match self.min_tokens {
            Some(m) if m < 0 => {
                return Err(ProtocolError::param(
                    "min_tokens",
                    "'min_tokens' must be at least 0",
                ))
            }
            Some(m) => m as usize,
            None => 0,
        };
        if self.cache_salt.as_deref() == Some("") {
            return Err(ProtocolError::param(
                "cache_salt",
                "'cache_salt' must be a non-empty string when given",
            ));
        }
        let json_object = self.json_object()?;
        if json_object && self.ignore_eos == Some(true) {
            return Err(ProtocolError::param(
                "ignore_eos",
                "'ignore_eos' cannot be used with JSON mode: nothing may follow the object",
            ));
        }
        Ok(ValidSampling {
            json_object,
            cache_salt: self.cache_salt.clone(),
            max_tokens: max_tokens.map(|(_, v)| v as usize),
            temperature: range("temperature", self.temperature, 0.0, 2.0)?,
            top_p,
            top_k,
            min_p: range("min_p", self.min_p, 0.0, 1.0)?.unwrap_or(0.0),
            frequency_penalty: range("frequency_penalty", self.frequency_penalty, -2.0, 2.0)?
                .unwrap_or(0.0),
            presence_penalty: range("presence_penalty", self.presence_penalty, -2.0, 2.0)?
                .unwrap_or(0.0),
            repetition_penalty,
            seed: self.seed.map(|s| s as u64),
            stop: self.stop()?,
            n: n as usize,
            logit_bias: self.logit_bias()?,
            ignore_eos: self.ignore_eos.unwrap_or(false),
            min_tokens,
        })
    }

    fn stop(&self) -> Result<Vec<String>, ProtocolError> {
        let list = match &self.stop {
            None => vec![],
            Some(StopField::One(s)) => vec![s.clone()],
            Some(StopField::Many(v)) => v.clone(),
        };
        if list.len() > MAX_STOP {
            return Err(ProtocolError::param(
                "stop",
                format!("at most {MAX_STOP} stop sequences"),
            ));
        }
        if list.iter().any(String::is_empty) {
            return Err(ProtocolError::param(
                "stop",
                "stop sequences must not be empty",
            ));
        }
        Ok(list)
    }

    fn logit_bias(&self) -> Result<Vec<(u32, f32)>, ProtocolError> {
        let Some(map) = &self.logit_bias else {
            return Ok(vec![]);
        };
        map.iter()
            .map(|(k, v)| {
                let id: u32 = k.parse().map_err(|_| {
                    ProtocolError::param(
                        "logit_bias",
                        format!("logit_bias key {k:?} is not a token id"),
                    )
                })?;
                let bias = v
                    .as_f64()
                    .filter(|b| (-100.0..=100.0).contains(b))
                    .ok_or_else(|| {
                        ProtocolError::param(
                            "logit_bias",
                            format!("logit_bias for {k} must be a number between -100 and 100"),
                        )
                    })?;
                Ok((id, bias as f32))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<ValidSampling, ProtocolError> {
        serde_json::from_str::<SamplingFields>(json)
            .unwrap()
            .validate()
    }

    #[test]
    fn out_of_range_values_name_their_param() {
        for (json, param) in [
            (r#"{"temperature":5}"#, "temperature"),
            (r#"{"top_p":0}"#, "top_p"),
            (r#"{"top_p":1.5}"#, "top_p"),
            (r#"{"max_tokens":-3}"#, "max_tokens"),
            (r#"{"max_completion_tokens":0}"#, "max_completion_tokens"),
            (r#"{"n":0}"#, "n"),
            (r#"{"top_k":-5}"#, "top_k"),
            (r#"{"frequency_penalty":3}"#, "frequency_penalty"),
            (r#"{"presence_penalty":-2.5}"#, "presence_penalty"),
            (r#"{"repetition_penalty":0}"#, "repetition_penalty"),
            (r#"{"min_p":2}"#, "min_p"),
            (r#"{"logit_bias":{"abc":1}}"#, "logit_bias"),
            (r#"{"logit_bias":{"5":1000}}"#, "logit_bias"),
            (r#"{"stop":""}"#, "stop"),
        ] {
            assert_eq!(
                check(json).unwrap_err().param.as_deref(),
                Some(param),
                "{json}"
            );
        }
    }

    #[test]
    fn defaults_and_aliases() {
        let v =
            check(r#"{"max_tokens":5,"max_completion_tokens":7,"stop":"x","top_k":-1}"#).unwrap();
        assert_eq!(v.max_tokens, Some(7));
        assert_eq!(v.stop, vec!["x"]);
        assert_eq!(v.top_k, Some(0));
        assert_eq!((v.n, v.temperature, v.repetition_penalty), (1, None, 1.0));
    }
}
