//! A string value, byte by byte: UTF-8, escapes (surrogate pairs whole),
//! length in characters and the pattern over the decoded characters.

use super::lex::{next_utf8, Lex, Step};
use super::node::{Node, Schema, StringRule};
use super::NodeId;

/// Where a string stands in an escape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Esc {
    No,
    /// After `\`.
    Backslash,
    /// Hex digits of `\u` still due, the code so far, and the high surrogate
    /// before it when this is the low one.
    Hex {
        left: u8,
        code: u16,
        high: u16,
    },
    /// After a high surrogate: `\` and then `u` of its low one.
    LowBackslash {
        high: u16,
    },
    LowU {
        high: u16,
    },
}

/// Inside a string value: its schema node, UTF-8 bytes due, escape, characters
/// so far and the pattern's automaton state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StrLex {
    node: NodeId,
    utf8: u8,
    esc: Esc,
    chars: u32,
    dfa: u32,
}

fn string_rule(schema: &Schema, node: NodeId) -> StringRule {
    match schema.node(node) {
        Node::String(r) => *r,
        _ => StringRule {
            min_chars: 0,
            max_chars: None,
            pattern: None,
        },
    }
}

impl StrLex {
    /// After the opening quote.
    pub fn open(schema: &Schema, node: NodeId) -> Option<Self> {
        let rule = string_rule(schema, node);
        let dfa = match rule.pattern {
            Some(p) => schema.patterns[p as usize].start()?,
            None => 0,
        };
        Some(Self {
            node,
            utf8: 0,
            esc: Esc::No,
            chars: 0,
            dfa,
        })
    }

    pub fn step(mut self, schema: &Schema, b: u8) -> Step {
        let rule = string_rule(schema, self.node);
        match self.esc {
            Esc::No if self.utf8 == 0 && b == b'"' => return self.close(schema, &rule),
            Esc::No if self.utf8 == 0 && b == b'\\' => {
                if !self.escape_may_come(schema, &rule) {
                    return Step::No;
                }
                self.esc = Esc::Backslash;
            }
            Esc::No => {
                let Some(due) = next_utf8(self.utf8, b) else {
                    return Step::No;
                };
                if self.utf8 == 0 && !self.count(&rule) {
                    return Step::No;
                }
                self.utf8 = due;
                if !self.pattern(schema, &rule, &[b]) {
                    return Step::No;
                }
            }
            Esc::Backslash => {
                let c = match b {
                    b'"' | b'\\' | b'/' => b,
                    b'b' => 0x08,
                    b'f' => 0x0C,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    // A pattern reads characters as they come: `\u` would be a
                    // guess at four digits (written plainly instead).
                    b'u' if rule.pattern.is_none() => {
                        self.esc = Esc::Hex {
                            left: 4,
                            code: 0,
                            high: 0,
                        };
                        return Step::Go(Lex::Str(self));
                    }
                    _ => return Step::No,
                };
                self.esc = Esc::No;
                if !self.count(&rule) || !self.pattern(schema, &rule, &[c]) {
                    return Step::No;
                }
            }
            Esc::Hex { left, code, high } => {
                let Some(d) = (b as char).to_digit(16) else {
                    return Step::No;
                };
                let code = code << 4 | d as u16;
                if !surrogate_prefix_ok(code, 5 - left, high) {
                    return Step::No;
                }
                if left > 1 {
                    self.esc = Esc::Hex {
                        left: left - 1,
                        code,
                        high,
                    };
                    return Step::Go(Lex::Str(self));
                }
                return self.escaped(schema, &rule, code, high);
            }
            Esc::LowBackslash { high } if b == b'\\' => self.esc = Esc::LowU { high },
            Esc::LowU { high } if b == b'u' => {
                self.esc = Esc::Hex {
                    left: 4,
                    code: 0,
                    high,
                }
            }
            Esc::LowBackslash { .. } | Esc::LowU { .. } => return Step::No,
        }
        Step::Go(Lex::Str(self))
    }

    /// Whether this is a free string (no length or pattern rule) between
    /// characters: every byte of plain text (see [`super::plain_text`]) is then
    /// taken, whatever comes after.
    pub fn is_plain(&self, schema: &Schema) -> bool {
        let rule = string_rule(schema, self.node);
        self.utf8 == 0 && self.esc == Esc::No && rule.max_chars.is_none() && rule.pattern.is_none()
    }

    /// Whether an escape may start here: room for one more character, and (with
    /// a pattern) some one-letter escape that the pattern takes.
    fn escape_may_come(&self, schema: &Schema, rule: &StringRule) -> bool {
        if rule.max_chars.is_some_and(|m| self.chars >= m) {
            return false;
        }
        match rule.pattern {
            None => true,
            Some(p) => {
                let p = &schema.patterns[p as usize];
                b"\"\\/\x08\x0C\n\r\t"
                    .iter()
                    .any(|&c| p.step(self.dfa, &[c]).is_some())
            }
        }
    }

    /// A `\u` escape is complete: a character, or half of a surrogate pair.
    fn escaped(mut self, schema: &Schema, rule: &StringRule, code: u16, high: u16) -> Step {
        let is_high = (0xD800..0xDC00).contains(&code);
        let is_low = (0xDC00..0xE000).contains(&code);
        let c = match (high, is_high, is_low) {
            (0, true, _) => {
                self.esc = Esc::LowBackslash { high: code };
                return Step::Go(Lex::Str(self));
            }
            (0, false, false) => char::from_u32(code as u32),
            (h, false, true) if h != 0 => {
                char::from_u32(0x10000 + ((h as u32 - 0xD800) << 10) + (code as u32 - 0xDC00))
            }
            _ => None, // a lone or doubled surrogate
        };
        let Some(c) = c else { return Step::No };
        self.esc = Esc::No;
        let mut buf = [0u8; 4];
        if !self.count(rule) || !self.pattern(schema, rule, c.encode_utf8(&mut buf).as_bytes()) {
            return Step::No;
        }
        Step::Go(Lex::Str(self))
    }

    /// One more character, if the maximum length allows it. Characters are
    /// counted only as far as a length rule needs (so that every position in a
    /// free string is the same state, with the same mask).
    fn count(&mut self, rule: &StringRule) -> bool {
        match rule.max_chars {
            Some(m) => {
                self.chars += 1;
                self.chars <= m
            }
            None => {
                self.chars = (self.chars + 1).min(rule.min_chars);
                true
            }
        }
    }

    /// Feeds decoded bytes to the pattern; false once it can no longer match.
    fn pattern(&mut self, schema: &Schema, rule: &StringRule, bytes: &[u8]) -> bool {
        let Some(p) = rule.pattern else { return true };
        match schema.patterns[p as usize].step(self.dfa, bytes) {
            Some(next) => {
                self.dfa = next;
                true
            }
            None => false,
        }
    }

    fn close(self, schema: &Schema, rule: &StringRule) -> Step {
        let matched = rule
            .pattern
            .is_none_or(|p| schema.patterns[p as usize].accepts(self.dfa));
        match self.chars >= rule.min_chars && matched {
            true => Step::Done,
            false => Step::No,
        }
    }
}

/// Whether the first `digits` hex digits of a `\u` escape (`code`) can still
/// make a valid character: the low half of a surrogate pair after a high half
/// (`DC00`–`DFFF`), and never a low half alone.
fn surrogate_prefix_ok(code: u16, digits: u8, high: u16) -> bool {
    let first = |n: u8| code >> (4 * (digits - n));
    match (high != 0, digits) {
        (true, 1) => first(1) == 0xD,
        (true, _) => first(2) >= 0xDC && first(2) <= 0xDF,
        (false, 1) => true,
        (false, _) => !(0xDC..=0xDF).contains(&first(2)),
    }
}
