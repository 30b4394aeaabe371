//! A JSON Schema (the subset a recognizer can enforce byte by byte) compiled into
//! a graph of nodes. Keywords that constrain and are enforced: `type`, `enum`,
//! `const`, `properties`, `required`, `additionalProperties`, `min/maxProperties`,
//! `items`, `prefixItems`, `min/maxItems`, `minLength`, `maxLength`, `pattern`,
//! `format` (date, time, date-time, uuid, email, ipv4; other formats are
//! annotations, as the specification allows), `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `anyOf`, `oneOf` (as `anyOf`), `allOf`
//! with one schema, `$ref` into the same document (recursion allowed) and
//! `nullable`. Annotations are ignored. Anything else is an error naming the
//! keyword and where it is: a client that asks for a constraint relies on it.
//!
//! Where a schema lists `properties`, others are refused unless
//! `additionalProperties` allows them: the schema lists what may come (as
//! OpenAI's strict mode requires anyway). Without `properties`, any key may come.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::keywords::{
    check_keywords, count, escape_pointer, format_pattern, implied_type, names, number,
    only_beside, raw_key, resolve,
};
use super::node::{
    literals, ArrayRule, Node, NumberRule, ObjectRule, Schema, StringRule, ANY, ANY_ARRAY,
    ANY_LITERAL, ANY_NUMBER, ANY_OBJECT, ANY_STRING,
};
use super::pattern::Pattern;
use super::NodeId;

/// Which nodes accept some value: every rule but a union, and a union with a
/// member that does (a `$ref` cycle that never reaches a rule accepts nothing).
fn productive(nodes: &[Node]) -> Vec<bool> {
    let mut ok: Vec<bool> = nodes.iter().map(|n| !matches!(n, Node::AnyOf(_))).collect();
    loop {
        let mut changed = false;
        for (i, n) in nodes.iter().enumerate() {
            if let Node::AnyOf(list) = n {
                if !ok[i] && list.iter().any(|&m| ok[m as usize]) {
                    ok[i] = true;
                    changed = true;
                }
            }
        }
        if !changed {
            return ok;
        }
    }
}

/// Refuses property counts that cannot be enforced or met: keys not listed are
/// not remembered (a repeat would count twice), and the required keys must fit.
fn check_counts(
    props: &[(Box<[u8]>, NodeId)],
    required: u64,
    additional: Option<NodeId>,
    min: u32,
    max: Option<u32>,
    path: &str,
) -> Result<(), SchemaError> {
    let counted = min > 0 || max.is_some();
    if counted && additional.is_some() {
        return Err(err(
            path,
            "'minProperties'/'maxProperties' cannot be enforced where keys not listed may come \
             (set 'additionalProperties': false)",
        ));
    }
    if max.is_some_and(|m| m < required.count_ones() || m < min) || (min as usize) > props.len() {
        return Err(err(
            path,
            "no object meets 'required', 'minProperties' and 'maxProperties'",
        ));
    }
    Ok(())
}

/// Most properties one object may declare.
pub const MAX_PROPERTIES: usize = 64;
/// Most nodes a schema may compile to.
const MAX_NODES: usize = 4096;

/// What the schema cannot be compiled for, and where (a JSON pointer).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct SchemaError {
    pub path: String,
    pub msg: String,
}

impl Schema {
    /// JSON mode: any object.
    pub fn any_object() -> Self {
        let mut c = Compiler::new(&Value::Null);
        let root = ANY_OBJECT;
        Self {
            nodes: std::mem::take(&mut c.nodes),
            patterns: Vec::new(),
            root,
        }
    }

    /// Compiles `schema` (a JSON Schema document).
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let mut c = Compiler::new(schema);
        let root = c.node(schema, "#")?;
        if !productive(&c.nodes)[root as usize] {
            return Err(err(
                "#",
                "the schema accepts no document (a '$ref' cycle, or 'false')",
            ));
        }
        Ok(Self {
            nodes: c.nodes,
            patterns: c.patterns,
            root,
        })
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }
}

struct Compiler<'a> {
    doc: &'a Value,
    nodes: Vec<Node>,
    patterns: Vec<Arc<Pattern>>,
    refs: HashMap<String, NodeId>,
}

pub(crate) fn err(path: &str, msg: impl Into<String>) -> SchemaError {
    SchemaError {
        path: path.to_string(),
        msg: msg.into(),
    }
}

impl<'a> Compiler<'a> {
    fn new(doc: &'a Value) -> Self {
        let any_literal = literals(&[Value::Null, Value::Bool(true), Value::Bool(false)]);
        let nodes = vec![
            Node::AnyOf(vec![
                ANY_OBJECT,
                ANY_ARRAY,
                ANY_STRING,
                ANY_NUMBER,
                ANY_LITERAL,
            ]),
            Node::Object(ObjectRule {
                props: Vec::new(),
                required: 0,
                additional: Some(ANY),
                min: 0,
                max: None,
            }),
            Node::Array(ArrayRule {
                prefix: Vec::new(),
                items: Some(ANY),
                min: 0,
                max: None,
            }),
            Node::String(StringRule {
                min_chars: 0,
                max_chars: None,
                pattern: None,
            }),
            Node::Number(NumberRule {
                integer: false,
                min: None,
                max: None,
            }),
            any_literal,
        ];
        Self {
            doc,
            nodes,
            patterns: Vec::new(),
            refs: HashMap::new(),
        }
    }

    fn push(&mut self, node: Node, path: &str) -> Result<NodeId, SchemaError> {
        if self.nodes.len() >= MAX_NODES {
            return Err(err(
                path,
                format!("the schema is too large (over {MAX_NODES} parts)"),
            ));
        }
        self.nodes.push(node);
        Ok((self.nodes.len() - 1) as NodeId)
    }

    /// Compiles one schema (an object or a boolean).
    fn node(&mut self, s: &Value, path: &str) -> Result<NodeId, SchemaError> {
        let map = match s {
            Value::Bool(true) => return Ok(ANY),
            Value::Bool(false) => return self.push(Node::AnyOf(vec![]), path),
            Value::Object(map) => map,
            _ => return Err(err(path, "a schema must be an object or a boolean")),
        };
        check_keywords(map, path)?;
        let nullable = map.get("nullable").and_then(Value::as_bool) == Some(true);
        let id = self.node_of(map, path)?;
        match nullable {
            true => {
                let null = self.push(literals(&[Value::Null]), path)?;
                self.push(Node::AnyOf(vec![id, null]), path)
            }
            false => Ok(id),
        }
    }

    fn node_of(&mut self, map: &Map<String, Value>, path: &str) -> Result<NodeId, SchemaError> {
        if let Some(r) = map.get("$ref") {
            only_beside(map, "$ref", path)?;
            return self.reference(r, path);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(list) = map.get(key) {
                only_beside(map, key, path)?;
                let ids = self.list(list, &format!("{path}/{key}"))?;
                return self.push(Node::AnyOf(ids), path);
            }
        }
        if let Some(list) = map.get("allOf") {
            only_beside(map, "allOf", path)?;
            return match list.as_array().map(Vec::as_slice) {
                Some([one]) => self.node(one, &format!("{path}/allOf/0")),
                _ => Err(err(
                    path,
                    "'allOf' is supported with exactly one schema (merge the others into it)",
                )),
            };
        }
        if let Some(v) = map.get("const") {
            return self.push(literals([v]), path);
        }
        if let Some(v) = map.get("enum") {
            return match v.as_array() {
                Some(list) if !list.is_empty() => self.push(literals(list), path),
                _ => Err(err(
                    &format!("{path}/enum"),
                    "'enum' must be a non-empty array",
                )),
            };
        }
        match map.get("type") {
            Some(Value::String(t)) => self.typed(t, map, path),
            Some(Value::Array(types)) => {
                let mut ids = Vec::new();
                for t in types {
                    let t = t
                        .as_str()
                        .ok_or_else(|| err(&format!("{path}/type"), "types must be strings"))?;
                    ids.push(self.typed(t, map, path)?);
                }
                self.push(Node::AnyOf(ids), path)
            }
            Some(_) => Err(err(
                &format!("{path}/type"),
                "'type' must be a string or a list",
            )),
            None => match implied_type(map) {
                Some(t) => self.typed(t, map, path),
                None => Ok(ANY),
            },
        }
    }

    fn list(&mut self, list: &Value, path: &str) -> Result<Vec<NodeId>, SchemaError> {
        let list = list
            .as_array()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| err(path, "must be a non-empty array of schemas"))?;
        list.iter()
            .enumerate()
            .map(|(i, s)| self.node(s, &format!("{path}/{i}")))
            .collect()
    }

    fn reference(&mut self, r: &Value, path: &str) -> Result<NodeId, SchemaError> {
        let r = r
            .as_str()
            .ok_or_else(|| err(&format!("{path}/$ref"), "'$ref' must be a string"))?;
        if let Some(&id) = self.refs.get(r) {
            return Ok(id);
        }
        let target = r
            .strip_prefix('#')
            .and_then(|p| resolve(self.doc, p))
            .ok_or_else(|| {
                err(
                    &format!("{path}/$ref"),
                    format!("'$ref' {r:?} does not point into this schema"),
                )
            })?;
        // Reserve the id first: the target may refer back to itself.
        let id = self.push(Node::AnyOf(vec![]), path)?;
        self.refs.insert(r.to_string(), id);
        let inner = self.node(target, r)?;
        self.nodes[id as usize] = Node::AnyOf(vec![inner]);
        Ok(id)
    }

    fn typed(
        &mut self,
        t: &str,
        map: &Map<String, Value>,
        path: &str,
    ) -> Result<NodeId, SchemaError> {
        let node = match t {
            "object" => Node::Object(self.object(map, path)?),
            "array" => Node::Array(self.array(map, path)?),
            "string" => Node::String(self.string(map, path)?),
            "number" | "integer" => Node::Number(number(t == "integer", map, path)?),
            "boolean" => literals(&[Value::Bool(false), Value::Bool(true)]),
            "null" => literals(&[Value::Null]),
            other => {
                return Err(err(
                    &format!("{path}/type"),
                    format!("unknown type {other:?}"),
                ))
            }
        };
        self.push(node, path)
    }

    fn object(&mut self, map: &Map<String, Value>, path: &str) -> Result<ObjectRule, SchemaError> {
        let mut props = Vec::new();
        if let Some(p) = map.get("properties") {
            let p = p
                .as_object()
                .ok_or_else(|| err(&format!("{path}/properties"), "must be an object"))?;
            if p.len() > MAX_PROPERTIES {
                return Err(err(
                    &format!("{path}/properties"),
                    format!("at most {MAX_PROPERTIES} properties per object"),
                ));
            }
            for (k, s) in p {
                let id = self.node(s, &format!("{path}/properties/{}", escape_pointer(k)))?;
                props.push((raw_key(k), id));
            }
        }
        // Without `properties`, an object may hold any keys (`{"type": "object"}`).
        let additional = match map.get("additionalProperties") {
            None if !map.contains_key("properties") => Some(ANY),
            None | Some(Value::Bool(false)) => None,
            Some(s) => Some(self.node(s, &format!("{path}/additionalProperties"))?),
        };
        let mut required = 0u64;
        for name in names(map.get("required"), &format!("{path}/required"))? {
            let key = raw_key(name);
            match props.iter().position(|(k, _)| *k == key) {
                Some(i) if self.nodes[props[i].1 as usize] == Node::AnyOf(vec![]) => {
                    return Err(err(
                        &format!("{path}/properties/{}", escape_pointer(name)),
                        "a required property whose schema accepts nothing",
                    ))
                }
                Some(i) => required |= 1 << i,
                None => {
                    return Err(err(
                        &format!("{path}/required"),
                        format!("required property {name:?} is not among 'properties'"),
                    ))
                }
            }
        }
        let min = count(map, "minProperties", path)?.unwrap_or(0);
        let max = count(map, "maxProperties", path)?;
        check_counts(&props, required, additional, min, max, path)?;
        Ok(ObjectRule {
            props,
            required,
            additional,
            min,
            max,
        })
    }

    fn array(&mut self, map: &Map<String, Value>, path: &str) -> Result<ArrayRule, SchemaError> {
        if map.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            return Err(err(
                &format!("{path}/uniqueItems"),
                "'uniqueItems' cannot be enforced",
            ));
        }
        let mut prefix = Vec::new();
        if let Some(p) = map.get("prefixItems") {
            prefix = self.list(p, &format!("{path}/prefixItems"))?;
        }
        let items = match map.get("items") {
            None | Some(Value::Bool(true)) => Some(ANY),
            Some(Value::Bool(false)) => None,
            Some(Value::Array(_)) => {
                return Err(err(
                    &format!("{path}/items"),
                    "a list of schemas in 'items' is written 'prefixItems'",
                ))
            }
            Some(s) => Some(self.node(s, &format!("{path}/items"))?),
        };
        let min = count(map, "minItems", path)?.unwrap_or(0);
        let max = count(map, "maxItems", path)?;
        if items.is_none() && (min as usize) > prefix.len() {
            return Err(err(path, "'minItems' asks for more items than may come"));
        }
        Ok(ArrayRule {
            prefix,
            items,
            min,
            max,
        })
    }

    fn string(&mut self, map: &Map<String, Value>, path: &str) -> Result<StringRule, SchemaError> {
        let pattern = match (
            map.get("pattern"),
            map.get("format").and_then(Value::as_str),
        ) {
            (Some(p), _) => {
                let path = format!("{path}/pattern");
                let p = p.as_str().ok_or_else(|| err(&path, "must be a string"))?;
                Some(self.pattern(Pattern::search(p), &path)?)
            }
            (None, Some(f)) => match format_pattern(f) {
                Some(p) => Some(self.pattern(Pattern::whole(&p), &format!("{path}/format"))?),
                None => None,
            },
            (None, None) => None,
        };
        let min_chars = count(map, "minLength", path)?.unwrap_or(0);
        let max_chars = count(map, "maxLength", path)?;
        if max_chars.is_some_and(|m| m < min_chars) {
            return Err(err(path, "'minLength' is above 'maxLength'"));
        }
        Ok(StringRule {
            min_chars,
            max_chars,
            pattern,
        })
    }

    fn pattern(&mut self, built: Result<Pattern, String>, path: &str) -> Result<u32, SchemaError> {
        let p = built.map_err(|e| err(path, format!("the pattern cannot be used: {e}")))?;
        self.patterns.push(Arc::new(p));
        Ok((self.patterns.len() - 1) as u32)
    }
}
