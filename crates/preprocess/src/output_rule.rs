//! What a request asks its output to be, as one rule: a JSON document (JSON
//! mode or a schema), tool calls the model must make, or tool calls it may make
//! instead of its answer. Compiled into one schema (and whether it applies from
//! the start or only once the output opens a list of calls).

use serde_json::{json, Value};

use crate::schema::{Schema, SchemaError};

/// Tools the output may call: each one's name and parameters schema.
#[derive(Debug, Clone, Copy)]
pub struct ToolRule<'a> {
    pub tools: &'a [(String, Option<Value>)],
    /// More than one call per answer.
    pub parallel: bool,
    /// A call must be made (`tool_choice` `required` or a named tool).
    pub required: bool,
}

/// The answer's rule: `answer` is `None` for free text, `Some(None)` for any JSON
/// object, `Some(Some(schema))` for what the schema accepts.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputRule<'a> {
    pub answer: Option<Option<&'a Value>>,
    pub tools: Option<ToolRule<'a>>,
}

/// A schema in the request that cannot be enforced: the request field it is in
/// (`response_format` or `tools`), where, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{at}: {error}")]
pub struct RuleError {
    pub param: &'static str,
    pub at: String,
    pub error: SchemaError,
}

/// The compiled rule: the schema, and whether it applies only once the output
/// opens a list (`[`), being free text otherwise.
pub struct CompiledRule {
    pub schema: Schema,
    pub triggered: bool,
}

impl OutputRule<'_> {
    /// Whether the output is constrained at all.
    pub fn is_free(&self) -> bool {
        self.answer.is_none() && self.tools.is_none()
    }

    /// A key equal for equal rules (compiled rules are kept by it).
    pub fn key(&self) -> String {
        let tools = self.tools.map(|t| json!([t.tools, t.parallel, t.required]));
        json!([self.answer, tools]).to_string()
    }

    pub fn compile(&self) -> Result<CompiledRule, RuleError> {
        let answer = self.answer.map(answer_schema).transpose()?;
        let Some(tools) = self.tools else {
            let schema = answer.unwrap_or_else(Schema::any_object);
            return Ok(CompiledRule {
                schema,
                triggered: false,
            });
        };
        let calls = call_schema(&tools)?;
        Ok(match (tools.required, answer) {
            (true, _) => CompiledRule {
                schema: calls,
                triggered: false,
            },
            (false, Some(answer)) => CompiledRule {
                schema: Schema::any_of(vec![answer, calls]),
                triggered: false,
            },
            (false, None) => CompiledRule {
                schema: calls,
                triggered: true,
            },
        })
    }
}

fn answer_schema(schema: Option<&Value>) -> Result<Schema, RuleError> {
    match schema {
        None => Ok(Schema::any_object()),
        Some(s) => Schema::compile(s).map_err(|error| RuleError {
            param: "response_format",
            at: "response_format.json_schema.schema".into(),
            error,
        }),
    }
}

fn call_schema(rule: &ToolRule) -> Result<Schema, RuleError> {
    let mut tools = Vec::with_capacity(rule.tools.len());
    for (i, (name, parameters)) in rule.tools.iter().enumerate() {
        let at = format!("tools[{i}].function.parameters");
        let schema = arguments_schema(parameters.as_ref()).map_err(|error| RuleError {
            param: "tools",
            at,
            error,
        })?;
        tools.push((name.clone(), schema));
    }
    let max = (!rule.parallel).then_some(1);
    Ok(Schema::tool_calls(tools, 1, max))
}

/// A function's arguments are an object: no parameters is the empty object,
/// and a schema that allows other values is narrowed to its objects.
fn arguments_schema(parameters: Option<&Value>) -> Result<Schema, SchemaError> {
    let empty = json!({"type": "object", "properties": {}});
    Schema::compile(parameters.unwrap_or(&empty))?
        .objects_only()
        .ok_or_else(|| SchemaError {
            path: "#".into(),
            msg: "a function's parameters must allow an object".into(),
        })
}
