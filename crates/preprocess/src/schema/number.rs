//! Numbers and literals (`enum`, `const`, booleans, null), byte by byte.

use super::bounds::{feasible, within};
use super::lex::{Lex, Step};
use super::node::{Node, NumberRule, Schema};
use super::NodeId;

/// Longest number, in bytes.
pub(crate) const MAX_NUMBER_BYTES: usize = 32;
/// Most digits of an exponent.
const MAX_EXPONENT_DIGITS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    fn can_end(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }
}

/// Inside a number: its node, where it stands in the grammar, and its text
/// (for the bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct NumLex {
    node: NodeId,
    num: Num,
    len: u8,
    text: [u8; MAX_NUMBER_BYTES],
}

fn number_rule(schema: &Schema, node: NodeId) -> NumberRule {
    match schema.node(node) {
        Node::Number(r) => *r,
        _ => NumberRule {
            integer: false,
            min: None,
            max: None,
        },
    }
}

impl NumLex {
    /// At the number's first byte.
    pub fn open(schema: &Schema, node: NodeId, b: u8) -> Option<Self> {
        let num = match b {
            b'-' => Num::Minus,
            b'0' => Num::Zero,
            b'1'..=b'9' => Num::Int,
            _ => return None,
        };
        let lex = Self {
            node,
            num,
            len: 1,
            text: {
                let mut t = [0; MAX_NUMBER_BYTES];
                t[0] = b;
                t
            },
        };
        let rule = number_rule(schema, node);
        (!rule.bounded() || feasible(lex.text(), &rule)).then_some(lex)
    }

    fn text(&self) -> &[u8] {
        &self.text[..self.len as usize]
    }

    /// Whether the number may end here.
    pub fn can_end(&self, schema: &Schema) -> bool {
        let rule = number_rule(schema, self.node);
        self.num.can_end() && (!rule.bounded() || within(self.text(), &rule))
    }

    pub fn step(mut self, schema: &Schema, b: u8) -> Step {
        let rule = number_rule(schema, self.node);
        let Some(num) = next_number(self.num, b) else {
            return if self.can_end(schema) {
                Step::Ended
            } else {
                Step::No
            };
        };
        let fraction = matches!(num, Num::Dot | Num::Frac | Num::E | Num::ESign | Num::Exp);
        let exponent = matches!(num, Num::E | Num::ESign | Num::Exp);
        if (rule.integer && fraction) || (rule.bounded() && exponent) {
            return if self.can_end(schema) {
                Step::Ended
            } else {
                Step::No
            };
        }
        let int_digits = self
            .text()
            .iter()
            .take_while(|&&c| c != b'.')
            .filter(|c| c.is_ascii_digit())
            .count();
        // Two exponent digits at most: every such number is a finite double.
        let exp_digits = self
            .text()
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if num == Num::Exp && self.num == Num::Exp && exp_digits >= MAX_EXPONENT_DIGITS {
            return Step::No;
        }
        // Full length only where the number can end (never a dead end).
        let len = self.len as usize + 1;
        if len > MAX_NUMBER_BYTES
            || (len == MAX_NUMBER_BYTES && !num.can_end())
            || (rule.bounded() && num == Num::Int && int_digits >= super::bounds::MAX_INT_DIGITS)
        {
            return Step::No;
        }
        self.text[self.len as usize] = b;
        self.len += 1;
        self.num = num;
        if rule.bounded() && !feasible(self.text(), &rule) {
            return Step::No;
        }
        Step::Go(Lex::Num(self))
    }
}

/// The number state after byte `b`, if `b` continues the number.
fn next_number(n: Num, b: u8) -> Option<Num> {
    let digit = b.is_ascii_digit();
    Some(match (n, b) {
        (Num::Minus, b'0') => Num::Zero,
        (Num::Minus, _) if digit => Num::Int,
        (Num::Int, _) if digit => Num::Int,
        (Num::Zero | Num::Int, b'.') => Num::Dot,
        (Num::Dot | Num::Frac, _) if digit => Num::Frac,
        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
        (Num::E, b'+' | b'-') => Num::ESign,
        (Num::E | Num::ESign | Num::Exp, _) if digit => Num::Exp,
        _ => return None,
    })
}

/// Inside one of a node's literals: those in `lo..hi` share the `offset` bytes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LitLex {
    node: NodeId,
    lo: u32,
    hi: u32,
    offset: u32,
}

fn literal_list(schema: &Schema, node: NodeId) -> &[Box<[u8]>] {
    match schema.node(node) {
        Node::Literals(list) => list,
        _ => &[],
    }
}

impl LitLex {
    /// At the literal's first byte.
    pub fn open(schema: &Schema, node: NodeId, b: u8) -> Option<Self> {
        let list = literal_list(schema, node);
        let all = Self {
            node,
            lo: 0,
            hi: list.len() as u32,
            offset: 0,
        };
        all.narrow(list, b)
    }

    /// Those of `lo..hi` whose next byte is `b` (a sorted list keeps them together).
    fn narrow(self, list: &[Box<[u8]>], b: u8) -> Option<Self> {
        let at = self.offset as usize;
        let range = &list[self.lo as usize..self.hi as usize];
        let start = range.partition_point(|l| l.get(at).is_none_or(|&c| c < b));
        let end = range.partition_point(|l| l.get(at).is_none_or(|&c| c <= b));
        (start < end).then(|| Self {
            lo: self.lo + start as u32,
            hi: self.lo + end as u32,
            offset: self.offset + 1,
            ..self
        })
    }

    /// Whether a literal ends exactly here.
    pub fn can_end(&self, schema: &Schema) -> bool {
        let list = literal_list(schema, self.node);
        list.get(self.lo as usize)
            .is_some_and(|l| l.len() == self.offset as usize)
    }

    pub fn step(self, schema: &Schema, b: u8) -> Step {
        let list = literal_list(schema, self.node);
        match self.narrow(list, b) {
            Some(next)
                if next.hi - next.lo == 1 && next.can_end(schema) && ends_itself(list, next) =>
            {
                Step::Done
            }
            Some(next) => Step::Go(Lex::Lit(next)),
            None if self.can_end(schema) => Step::Ended,
            None => Step::No,
        }
    }
}

/// A literal that closes itself (a string, object, array, `true`, `false` or
/// `null`) ends with its last byte; a number only at the next byte.
fn ends_itself(list: &[Box<[u8]>], at: LitLex) -> bool {
    list.get(at.lo as usize)
        .and_then(|l| l.last())
        .is_some_and(|c| !c.is_ascii_digit())
}
