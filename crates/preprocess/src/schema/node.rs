//! The compiled schema: a graph of nodes, each a rule for one JSON value.

use std::sync::Arc;

use serde_json::Value;

use super::lex::Prop;
use super::pattern::Pattern;
use super::NodeId;

/// Bound on a number: the value and whether it is exclusive.
pub(crate) type Bound = Option<(f64, bool)>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NumberRule {
    pub integer: bool,
    pub min: Bound,
    pub max: Bound,
}

impl NumberRule {
    pub fn bounded(&self) -> bool {
        self.min.is_some() || self.max.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StringRule {
    pub min_chars: u32,
    pub max_chars: Option<u32>,
    /// Index into [`Schema::patterns`].
    pub pattern: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ArrayRule {
    pub prefix: Vec<NodeId>,
    /// After the prefix; `None`: nothing more.
    pub items: Option<NodeId>,
    pub min: u32,
    pub max: Option<u32>,
}

impl ArrayRule {
    /// The schema of element `i`, if there may be one.
    pub fn element(&self, i: u32) -> Option<NodeId> {
        self.prefix.get(i as usize).copied().or(self.items)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObjectRule {
    /// Keys as they appear between the quotes (JSON-escaped), and their schemas.
    pub props: Vec<(Box<[u8]>, NodeId)>,
    /// Bit `i`: `props[i]` must come.
    pub required: u64,
    /// The schema of keys not listed; `None`: they are refused.
    pub additional: Option<NodeId>,
    pub min: u32,
    pub max: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// One of these documents exactly (compact, sorted, distinct): `enum`,
    /// `const`, booleans and null.
    Literals(Vec<Box<[u8]>>),
    Number(NumberRule),
    String(StringRule),
    Array(ArrayRule),
    Object(ObjectRule),
    /// Any of these (an empty list: nothing, the schema `false`).
    AnyOf(Vec<NodeId>),
}

/// A compiled schema: `nodes[root]` is the document.
#[derive(Debug)]
pub struct Schema {
    pub(crate) nodes: Vec<Node>,
    pub(crate) patterns: Vec<Arc<Pattern>>,
    pub(crate) root: NodeId,
}

/// Nodes every schema has, at these ids.
pub(crate) const ANY: NodeId = 0;
pub(crate) const ANY_OBJECT: NodeId = 1;
pub(crate) const ANY_ARRAY: NodeId = 2;
pub(crate) const ANY_STRING: NodeId = 3;
pub(crate) const ANY_NUMBER: NodeId = 4;
pub(crate) const ANY_LITERAL: NodeId = 5;

pub(crate) fn literals<'a>(docs: impl IntoIterator<Item = &'a Value>) -> Node {
    let mut list: Vec<Box<[u8]>> = docs
        .into_iter()
        .map(|v| serde_json::to_vec(v).unwrap_or_default().into_boxed_slice())
        .collect();
    list.sort();
    list.dedup();
    Node::Literals(list)
}

impl ObjectRule {
    pub(crate) fn value_of(&self, p: Prop) -> Option<NodeId> {
        match p {
            Prop::Declared(i) => self.props.get(i as usize).map(|(_, n)| *n),
            Prop::Additional => self.additional,
        }
    }

    /// Whether another key may come.
    /// The listed keys that may come next (a bit each): those not seen, or only
    /// the required ones when `maxProperties` leaves room for no more.
    pub(crate) fn keys_left(&self, seen: u64, count: u32) -> u64 {
        let all = match self.props.len() {
            64.. => u64::MAX,
            n => (1u64 << n) - 1,
        };
        let unseen = all & !seen;
        let due = unseen & self.required;
        match self.max {
            Some(m) if m.saturating_sub(count) <= due.count_ones() => due,
            _ => unseen,
        }
    }

    /// Whether another key may come.
    pub(crate) fn key_may_come(&self, seen: u64, count: u32) -> bool {
        self.max.is_none_or(|m| count < m)
            && (self.keys_left(seen, count) != 0 || self.additional.is_some())
    }

    pub(crate) fn may_close(&self, seen: u64, count: u32) -> bool {
        seen & self.required == self.required && count >= self.min
    }
}

impl ArrayRule {
    pub(crate) fn element_may_come(&self, count: u32) -> bool {
        self.max.is_none_or(|m| count < m) && self.element(count).is_some()
    }
}
