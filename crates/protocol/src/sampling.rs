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
    /// `text`, `json_object` (JSON mode) or `json_schema` (structured output).
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
    /// `response_format`: free text, one JSON object, or JSON that a schema accepts.
    pub format: OutputFormat,
}

/// What the answer must be.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    #[default]
    Text,
    /// `{"type": "json_object"}`: one JSON object.
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`: a
    /// JSON document the schema accepts (compiled where the vocabulary is known).
    JsonSchema { name: String, schema: Value },
}

impl OutputFormat {
    pub fn is_json(&self) -> bool {
        !matches!(self, OutputFormat::Text)
    }
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
    /// The answer's format: `text` (or none), `json_object`, or `json_schema`
    /// with its schema.
    fn format(&self) -> Result<OutputFormat, ProtocolError> {
        let Some(format) = self.response_format.as_ref().filter(|v| !v.is_null()) else {
            return Ok(OutputFormat::Text);
        };
        let bad = |msg: String| ProtocolError::param("response_format", msg);
        match format.get("type").and_then(Value::as_str) {
            Some("text") => Ok(OutputFormat::Text),
            Some("json_object") => Ok(OutputFormat::JsonObject),
            Some("json_schema") => {
                let spec = format.get("json_schema").filter(|v| v.is_object()).ok_or_else(|| {
                    bad("'response_format' json_schema needs 'json_schema': {\"name\": ..., \"schema\": {...}}".into())
                })?;
                let name = match spec.get("name") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(n)) if n.len() <= 64 => n.clone(),
                    Some(_) => return Err(bad("'response_format.json_schema.name' must be a string of at most 64 characters".into())),
                };
                match spec.get("schema") {
                    Some(schema @ (Value::Object(_) | Value::Bool(_))) => {
                        Ok(OutputFormat::JsonSchema {
                            name,
                            schema: schema.clone(),
                        })
                    }
                    _ => Err(bad(
                        "'response_format.json_schema.schema' must be a JSON Schema (an object)"
                            .into(),
                    )),
                }
            }
            kind => {
                let kind = kind.map_or("without a type".to_string(), |k| format!("{k:?}"));
                Err(bad(format!(
                    "'response_format' {kind} is not supported (text, json_object or json_schema)"
                )))
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
        let format = self.format()?;
        if format.is_json() && self.ignore_eos == Some(true) {
            return Err(ProtocolError::param(
                "ignore_eos",
                "'ignore_eos' cannot be used with a JSON response_format: nothing may follow the document",
            ));
        }
        Ok(ValidSampling {
            format,
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

    #[test]
    fn response_formats() {
        assert_eq!(check(r#"{}"#).unwrap().format, OutputFormat::Text);
        assert_eq!(
            check(r#"{"response_format":{"type":"text"}}"#)
                .unwrap()
                .format,
            OutputFormat::Text
        );
        assert_eq!(
            check(r#"{"response_format":{"type":"json_object"}}"#)
                .unwrap()
                .format,
            OutputFormat::JsonObject
        );
        let v = check(
            r#"{"response_format":{"type":"json_schema","json_schema":{"name":"report","strict":true,
                "schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}}"#,
        )
        .unwrap();
        match v.format {
            OutputFormat::JsonSchema { name, schema } => {
                assert_eq!(name, "report");
                assert_eq!(schema["properties"]["a"]["type"], "integer");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"response_format":{"type":"json_schema"}}"#,
            r#"{"response_format":{"type":"json_schema","json_schema":{"name":"x"}}}"#,
            r#"{"response_format":{"type":"json_schema","json_schema":{"schema":"string"}}}"#,
            r#"{"response_format":{"type":"json_schema","json_schema":{"name":7,"schema":{}}}}"#,
            r#"{"response_format":{"type":"grammar"}}"#,
            r#"{"response_format":{}}"#,
            r#"{"response_format":{"type":"json_schema","json_schema":{"schema":{}}},"ignore_eos":true}"#,
        ] {
            let e = check(bad).unwrap_err();
            assert!(
                e.param.as_deref() == Some("response_format")
                    || e.param.as_deref() == Some("ignore_eos"),
                "{bad}: {e:?}"
            );
        }
    }
}
