//! Tool calling on a model without tool tokens (Gemma 3's template has none).
//! The tools are described in the system turn, with the answer's form: a JSON
//! list of `{"name", "arguments"}` calls and nothing else. The sampler holds the
//! model to that form (always, for `required` or a named tool; once the answer
//! opens a list, for `auto`: bare, or inside a Markdown code fence as Gemma
//! models often write it), so a list that ends is a list of valid calls. The
//! history's calls and tool results are written back in the same form.

use medgemma_preprocess::call_opening::unfence;
use medgemma_preprocess::{OutputRule, ToolRule};
use medgemma_protocol::{FunctionCall, HistoryCall, ToolCall, ToolChoice, ValidTools};
use serde_json::{json, Value};

/// The system turn's description of the tools and of how to call them.
pub fn system_text(tools: &ValidTools) -> String {
    let how = match (&tools.choice, tools.parallel) {
        (ToolChoice::Auto, true) => {
            "To call functions, answer with only a JSON list of calls and nothing \
             else. When no call is needed, answer in plain text instead."
                .to_string()
        }
        (ToolChoice::Auto, false) => {
            "To call a function, answer with only a JSON list holding one call and \
             nothing else. When no call is needed, answer in plain text instead."
                .to_string()
        }
        (ToolChoice::Required, true) => {
            "Answer with only a JSON list of one or more calls.".to_string()
        }
        (ToolChoice::Required, false) => {
            "Answer with only a JSON list holding one call.".to_string()
        }
        (ToolChoice::Named(name), _) => {
            format!("Answer with only a JSON list holding one call of the function {name:?}.")
        }
    };
    let mut text = format!(
        "You have access to functions. {how} A call is written \
         {{\"name\": \"<function name>\", \"arguments\": {{<the arguments as a JSON object>}}}}.\n\n\
         Functions:"
    );
    for t in &tools.tools {
        let mut f = json!({"name": t.name});
        if let Some(d) = &t.description {
            f["description"] = json!(d);
        }
        f["parameters"] = t
            .parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        text.push('\n');
        text.push_str(&f.to_string());
    }
    text
}

/// An assistant turn's calls, as the model is told to write them.
pub fn history_text(calls: &[HistoryCall]) -> String {
    let list: Vec<String> = calls
        .iter()
        .map(|c| {
            let arguments = serde_json::from_str::<Value>(&c.arguments)
                .unwrap_or_else(|_| Value::String(c.arguments.clone()));
            // The name first, as the model is told to write it.
            format!(
                r#"{{"name":{},"arguments":{arguments}}}"#,
                Value::String(c.name.clone())
            )
        })
        .collect();
    format!("[{}]", list.join(","))
}

/// A tool message as the user turn that brings the result back.
pub fn result_text(call_id: &str, name: Option<&str>, content: &str) -> String {
    match name {
        Some(name) => format!("Result of {name} (call {call_id}):\n{content}"),
        None => format!("Result of call {call_id}:\n{content}"),
    }
}

/// The output rule for a request's tools and answer format.
pub fn rule<'a>(
    tools: &'a ValidTools,
    specs: &'a [(String, Option<Value>)],
    answer: Option<Option<&'a Value>>,
) -> OutputRule<'a> {
    OutputRule {
        answer,
        tools: Some(ToolRule {
            tools: specs,
            parallel: tools.parallel && !matches!(tools.choice, ToolChoice::Named(_)),
            required: !matches!(tools.choice, ToolChoice::Auto),
        }),
    }
}

/// The (name, parameters) of the tools a request may call: all of them, or the
/// one `tool_choice` names.
pub fn specs(tools: &ValidTools) -> Vec<(String, Option<Value>)> {
    tools
        .tools
        .iter()
        .filter(|t| match &tools.choice {
            ToolChoice::Named(n) => *n == t.name,
            _ => true,
        })
        .map(|t| (t.name.clone(), t.parameters.clone()))
        .collect()
}

/// A call as the model wrote it; its arguments kept as written.
#[derive(serde::Deserialize)]
struct WrittenCall<'a> {
    name: String,
    #[serde(borrow)]
    arguments: &'a serde_json::value::RawValue,
}

/// The calls in a finished answer, if it is a list of calls of these tools
/// (after any blanks, or inside a code fence); ids are `call_<request>_<choice>_<k>`.
pub fn parse_calls(
    text: &str,
    tools: &ValidTools,
    request_id: &str,
    choice: usize,
) -> Option<Vec<ToolCall>> {
    let text = unfence(text).trim_start();
    if !text.starts_with('[') {
        return None;
    }
    let list: Vec<WrittenCall> = serde_json::from_str(text).ok()?;
    let stem = request_id.rsplit('-').next().unwrap_or(request_id);
    list.into_iter()
        .enumerate()
        .map(|(k, c)| {
            let arguments = c.arguments.get().trim();
            let known = tools.tools.iter().any(|t| t.name == c.name);
            (known && arguments.starts_with('{')).then(|| ToolCall {
                index: None,
                id: format!("call_{stem}_{choice}_{k}"),
                kind: "function",
                function: FunctionCall {
                    name: c.name,
                    arguments: arguments.to_string(),
                },
            })
        })
        .collect::<Option<Vec<_>>>()
        .filter(|calls| !calls.is_empty())
}

#[cfg(test)]
mod tests {
    use medgemma_protocol::ToolDef;

    use super::*;

    fn tools(choice: ToolChoice) -> ValidTools {
        ValidTools {
            tools: vec![ToolDef {
                name: "labs".into(),
                description: Some("Recent lab results".into()),
                parameters: Some(
                    json!({"type": "object", "properties": {"panel": {"type": "string"}}}),
                ),
            }],
            choice,
            parallel: true,
        }
    }

    #[test]
    fn calls_are_read_back_and_written_out_alike() {
        let t = tools(ToolChoice::Auto);
        let calls = parse_calls(
            r#"[{"name": "labs", "arguments": {"panel": "cbc"}}]"#,
            &t,
            "chatcmpl-1f2",
            0,
        )
        .unwrap();
        assert_eq!(calls[0].id, "call_1f2_0_0");
        assert_eq!(
            calls[0].function.arguments, r#"{"panel": "cbc"}"#,
            "as written"
        );
        let blank_first = parse_calls("\n [{\"name\": \"labs\", \"arguments\": {}}]", &t, "c-1", 0);
        assert_eq!(blank_first.unwrap()[0].function.arguments, "{}");
        let fenced = "```json\n[{\"name\": \"labs\", \"arguments\": {\"panel\": \"bmp\"}}]\n```";
        let fenced = parse_calls(fenced, &t, "c-1", 0).unwrap();
        assert_eq!(fenced[0].function.arguments, r#"{"panel": "bmp"}"#);
        let history = [HistoryCall {
            id: calls[0].id.clone(),
            name: "labs".into(),
            arguments: calls[0].function.arguments.clone(),
        }];
        assert_eq!(
            history_text(&history),
            r#"[{"name":"labs","arguments":{"panel":"cbc"}}]"#
        );
        for text in [
            "Plain text",
            "[]",
            r#"[{"name": "other", "arguments": {}}]"#,
            r#"[{"name": "labs"}]"#,
            "[1",
            "```python\nprint(1)\n```",
        ] {
            assert!(parse_calls(text, &t, "chatcmpl-1", 0).is_none(), "{text}");
        }
        let system = system_text(&t);
        assert!(system.contains("plain text") && system.contains(r#""name":"labs""#));
        assert!(system_text(&tools(ToolChoice::Named("labs".into()))).contains("\"labs\""));
    }
}
