//! Tool calling: `tools`, `tool_choice` and `parallel_tool_calls` checked into
//! [`ValidTools`], and the tool calls of assistant messages in the history.

use serde::Serialize;
use serde_json::Value;

use crate::error::ProtocolError;

/// Most tools one request may list.
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// Its arguments' JSON Schema (`None`: it takes none).
    pub parameters: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// The model answers, or calls tools (`auto`, the default with tools).
    Auto,
    /// The model calls one or more tools.
    Required,
    /// The model calls this tool.
    Named(String),
}

/// Checked tools of a request that may call them (`tool_choice` other than `none`).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidTools {
    pub tools: Vec<ToolDef>,
    pub choice: ToolChoice,
    /// More than one call in an answer.
    pub parallel: bool,
}

/// A call in an assistant message of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryCall {
    pub id: String,
    pub name: String,
    /// As sent: a JSON text (kept as is when it is not one).
    pub arguments: String,
}

/// A tool call in a response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolCall {
    /// Position among the choice's calls (stream deltas only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionCall,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

fn bad(param: &str, msg: impl Into<String>) -> ProtocolError {
    ProtocolError::param(param, msg)
}

fn tool(i: usize, t: &Value) -> Result<ToolDef, ProtocolError> {
    let param = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(bad(
            "tools",
            format!("{param}: only tools of type \"function\" are supported"),
        ));
    }
    let f = t
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| bad("tools", format!("{param} needs a 'function' object")))?;
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(bad(
            "tools",
            format!("{param}.function.name must be 1 to 64 letters, digits, '_' or '-'"),
        ));
    }
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.clone()),
        Some(_) => {
            return Err(bad(
                "tools",
                format!("{param}.function.description must be a string"),
            ))
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p.clone()),
        Some(_) => {
            return Err(bad(
                "tools",
                format!("{param}.function.parameters must be a JSON Schema object"),
            ))
        }
    };
    Ok(ToolDef {
        name: name.to_string(),
        description,
        parameters,
    })
}

/// Checks `tools`, `tool_choice` and `parallel_tool_calls`; `None` when the
/// model may not call tools (none listed, or `tool_choice: "none"`).
pub fn validate_tools(
    tools: Option<&Value>,
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<ValidTools>, ProtocolError> {
    let list = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_TOOLS => a
            .iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return Err(bad("tools", format!("at most {MAX_TOOLS} tools"))),
        Some(_) => return Err(bad("tools", "'tools' must be a list")),
    };
    for (i, t) in list.iter().enumerate() {
        if list[..i].iter().any(|u| u.name == t.name) {
            return Err(bad("tools", format!("tool {:?} is listed twice", t.name)));
        }
    }
    let choice = match choice {
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) if s == "none" => return Ok(None),
        Some(Value::String(s)) if s == "auto" => ToolChoice::Auto,
        Some(Value::String(s)) if s == "required" => ToolChoice::Required,
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) if v.get("type").and_then(Value::as_str) == Some("function") => {
                if !list.iter().any(|t| t.name == name) {
                    return Err(bad("tool_choice", format!("tool_choice names {name:?}, which is not among 'tools'")));
                }
                ToolChoice::Named(name.to_string())
            }
            _ => {
                return Err(bad(
                    "tool_choice",
                    "'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                ))
            }
        },
    };
    if list.is_empty() {
        return match choice {
            ToolChoice::Auto => Ok(None),
            _ => Err(bad(
                "tool_choice",
                "'tool_choice' asks for a tool call, but no 'tools' are listed",
            )),
        };
    }
    Ok(Some(ValidTools {
        tools: list,
        choice,
        parallel: parallel.unwrap_or(true),
    }))
}

/// The calls of an assistant message in the history (`messages[i].tool_calls`).
pub fn history_calls(calls: &Value, param: &str) -> Result<Vec<HistoryCall>, ProtocolError> {
    let list = calls.as_array().ok_or_else(|| {
        ProtocolError::invalid(format!("{param} must be a list"), Some(param.to_string()))
    })?;
    list.iter()
        .enumerate()
        .map(|(j, c)| {
            let at = format!("{param}[{j}]");
            let err =
                |what: &str| ProtocolError::invalid(format!("{at}: {what}"), Some(at.clone()));
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| err("needs a string 'id'"))?;
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| err("needs 'function': {\"name\", \"arguments\"}"))?;
            let arguments = match c.pointer("/function/arguments") {
                Some(Value::String(a)) => a.clone(),
                None | Some(Value::Null) => "{}".to_string(),
                Some(other) => other.to_string(),
            };
            Ok(HistoryCall {
                id: id.to_string(),
                name: name.to_string(),
                arguments,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
    }

    #[test]
    fn tools_and_choices() {
        let tools = json!([f("labs"), f("dose")]);
        let v = validate_tools(Some(&tools), None, None).unwrap().unwrap();
        assert_eq!(
            (v.tools.len(), &v.choice, v.parallel),
            (2, &ToolChoice::Auto, true)
        );
        let named = json!({"type": "function", "function": {"name": "dose"}});
        let v = validate_tools(Some(&tools), Some(&named), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(
            (v.choice, v.parallel),
            (ToolChoice::Named("dose".into()), false)
        );
        assert_eq!(
            validate_tools(Some(&tools), Some(&json!("none")), None).unwrap(),
            None
        );
        assert_eq!(
            validate_tools(None, Some(&json!("auto")), None).unwrap(),
            None
        );
        assert_eq!(validate_tools(Some(&json!([])), None, None).unwrap(), None);
        for (tools, choice, param) in [
            (json!([f("a"), f("a")]), json!("auto"), "tools"),
            (json!([f("bad name")]), json!("auto"), "tools"),
            (json!([{"type": "retrieval"}]), json!("auto"), "tools"),
            (json!("labs"), json!("auto"), "tools"),
            (
                json!([f("a")]),
                json!({"type": "function", "function": {"name": "b"}}),
                "tool_choice",
            ),
            (json!([f("a")]), json!("sometimes"), "tool_choice"),
            (json!([]), json!("required"), "tool_choice"),
        ] {
            let e = validate_tools(Some(&tools), Some(&choice), None).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{tools} {choice}");
        }
    }

    #[test]
    fn history_calls_keep_their_arguments() {
        let calls = json!([{"id": "c1", "type": "function", "function": {"name": "labs", "arguments": "{\"p\": 1}"}}]);
        let got = history_calls(&calls, "messages[1].tool_calls").unwrap();
        assert_eq!(got[0].arguments, "{\"p\": 1}");
        let e = history_calls(
            &json!([{"function": {"name": "x"}}]),
            "messages[1].tool_calls",
        )
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[1].tool_calls[0]"));
    }
}
