//! Schemas built from compiled ones: a union (an answer that may be a JSON
//! document or tool calls), and the list of tool calls itself. Each part keeps
//! its own `$ref`s, since each was compiled against its own document.

use super::node::{literals, ArrayRule, Node, ObjectRule, Schema};
use super::NodeId;

fn shifted(node: Node, nodes: NodeId, patterns: u32) -> Node {
    let id = |n: NodeId| n + nodes;
    match node {
        Node::AnyOf(list) => Node::AnyOf(list.into_iter().map(id).collect()),
        Node::Array(a) => Node::Array(ArrayRule {
            prefix: a.prefix.into_iter().map(id).collect(),
            items: a.items.map(id),
            ..a
        }),
        Node::Object(o) => Node::Object(ObjectRule {
            props: o.props.into_iter().map(|(k, n)| (k, id(n))).collect(),
            additional: o.additional.map(id),
            ..o
        }),
        Node::String(mut s) => {
            s.pattern = s.pattern.map(|p| p + patterns);
            Node::String(s)
        }
        other @ (Node::Literals(_) | Node::Number(_)) => other,
    }
}

impl Schema {
    /// Adds `other`'s nodes to this schema; the id of its root here.
    fn absorb(&mut self, other: Schema) -> NodeId {
        let (nodes, patterns) = (self.nodes.len() as NodeId, self.patterns.len() as u32);
        self.nodes
            .extend(other.nodes.into_iter().map(|n| shifted(n, nodes, patterns)));
        self.patterns.extend(other.patterns);
        other.root + nodes
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        (self.nodes.len() - 1) as NodeId
    }

    /// What any of `parts` accepts.
    pub fn any_of(parts: Vec<Schema>) -> Schema {
        let mut out = Schema::any_object();
        let roots = parts.into_iter().map(|p| out.absorb(p)).collect();
        out.root = out.push(Node::AnyOf(roots));
        out
    }

    /// The same schema, accepting only its objects (`None` if it accepts none):
    /// the unions from the root are followed to their objects.
    pub fn objects_only(mut self) -> Option<Schema> {
        let mut kept = Vec::new();
        let mut seen = vec![false; self.nodes.len()];
        let mut todo = vec![self.root];
        while let Some(n) = todo.pop() {
            if std::mem::replace(&mut seen[n as usize], true) {
                continue;
            }
            match &self.nodes[n as usize] {
                Node::AnyOf(list) => todo.extend(list.iter().copied()),
                Node::Object(_) => kept.push(n),
                Node::Literals(list) => {
                    let objects: Vec<Box<[u8]>> = list
                        .iter()
                        .filter(|l| l.first() == Some(&b'{'))
                        .cloned()
                        .collect();
                    if !objects.is_empty() {
                        kept.push(self.push(Node::Literals(objects)));
                    }
                }
                Node::Array(_) | Node::String(_) | Node::Number(_) => {}
            }
        }
        if kept.is_empty() {
            return None;
        }
        self.root = self.push(Node::AnyOf(kept));
        Some(self)
    }

    /// A JSON list of `min` to `max` calls, each `{"name": <a tool's name>,
    /// "arguments": <what its parameters schema accepts>}`.
    pub fn tool_calls(tools: Vec<(String, Schema)>, min: u32, max: Option<u32>) -> Schema {
        let mut out = Schema::any_object();
        let mut calls = Vec::with_capacity(tools.len());
        for (name, parameters) in tools {
            let arguments = out.absorb(parameters);
            let name = out.push(literals([&serde_json::Value::String(name)]));
            calls.push(out.push(Node::Object(ObjectRule {
                props: vec![
                    (b"name"[..].into(), name),
                    (b"arguments"[..].into(), arguments),
                ],
                required: 0b11,
                additional: None,
                min: 0,
                max: None,
            })));
        }
        let call = out.push(Node::AnyOf(calls));
        out.root = out.push(Node::Array(ArrayRule {
            prefix: Vec::new(),
            items: Some(call),
            min,
            max,
        }));
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::SchemaState;

    fn accepts(schema: &Schema, doc: &str) -> bool {
        let mut s = SchemaState::new();
        s.feed_all(schema, doc.as_bytes()) && s.complete(schema)
    }

    #[test]
    fn tool_calls_and_unions_keep_each_part_whole() {
        // Each tool's parameters have their own $defs and a pattern.
        let labs = Schema::compile(&json!({
            "type": "object", "$defs": {"Id": {"type": "string", "pattern": "^P[0-9]+$"}},
            "properties": {"patient": {"$ref": "#/$defs/Id"}, "panel": {"enum": ["cbc", "bmp"]}},
            "required": ["patient", "panel"]
        }))
        .unwrap();
        let dose = Schema::compile(&json!({
            "type": "object", "$defs": {"Id": {"type": "integer", "minimum": 1}},
            "properties": {"mg": {"$ref": "#/$defs/Id"}}, "required": ["mg"]
        }))
        .unwrap();
        let calls = Schema::tool_calls(
            vec![("labs".into(), labs), ("dose".into(), dose)],
            1,
            Some(2),
        );
        assert!(accepts(
            &calls,
            r#"[{"name": "labs", "arguments": {"patient": "P12", "panel": "cbc"}}]"#
        ));
        assert!(accepts(
            &calls,
            r#"[{"arguments": {"mg": 5}, "name": "dose"}, {"name": "labs", "arguments": {"panel": "bmp", "patient": "P1"}}]"#
        ));
        for bad in [
            "[]",
            r#"[{"name": "dose", "arguments": {"mg": "P12"}}]"#,
            r#"[{"name": "labs", "arguments": {"patient": 3, "panel": "cbc"}}]"#,
            r#"[{"name": "other", "arguments": {}}]"#,
            r#"[{"name": "dose", "arguments": {"mg": 1}}, {"name": "dose", "arguments": {"mg": 1}}, {"name": "dose", "arguments": {"mg": 1}}]"#,
        ] {
            assert!(!accepts(&calls, bad), "{bad}");
        }
        let answer =
            Schema::compile(&json!({"type": "object", "properties": {"text": {"type": "string"}}}))
                .unwrap();
        let calls = Schema::tool_calls(
            vec![(
                "ping".into(),
                Schema::compile(&json!({"type": "object"})).unwrap(),
            )],
            1,
            None,
        );
        let either = Schema::any_of(vec![answer, calls]);
        assert!(accepts(&either, r#"{"text": "done"}"#));
        assert!(accepts(
            &either,
            r#"[{"name": "ping", "arguments": {"any": [1]}}]"#
        ));
        assert!(!accepts(&either, r#"{"other": 1}"#));
        // Narrowed to objects: `{}` (anything) becomes any object.
        let any = Schema::compile(&json!({})).unwrap().objects_only().unwrap();
        assert!(accepts(&any, r#"{"a": 1}"#) && !accepts(&any, "65") && !accepts(&any, "null"));
        let refd = json!({"$ref": "#/$defs/A", "$defs": {"A": {"anyOf": [{"type": "string"}, {"type": "object"}]}}});
        let refd = Schema::compile(&refd).unwrap().objects_only().unwrap();
        assert!(accepts(&refd, "{}") && !accepts(&refd, r#""s""#));
        assert!(Schema::compile(&json!({"type": "string"}))
            .unwrap()
            .objects_only()
            .is_none());
    }
}
