//! The token being read: a key, a string, a number or a literal, one byte at a
//! time, with what the schema asks of it (key names, length, pattern, bounds).
//! Keys are here; strings in `string`, numbers and literals in `number`.

use super::node::ObjectRule;
pub(crate) use super::number::{LitLex, NumLex};
pub(crate) use super::string::StrLex;

/// What one byte does to the token.
pub(crate) enum Step {
    /// Taken; the token goes on.
    Go(Lex),
    /// Taken, and it ended the value (a closing quote, the last byte of a literal).
    Done,
    /// The value ended just before this byte, which belongs to what follows.
    Ended,
    /// A key ended (its closing quote): the property it names.
    Key(Prop),
    No,
}

/// Which schema a member's value follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Prop {
    /// `properties[i]`.
    Declared(u8),
    /// `additionalProperties`.
    Additional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Lex {
    /// Between tokens.
    Between,
    Key(KeyLex),
    Str(StrLex),
    Num(NumLex),
    Lit(LitLex),
}

/// Inside a key: the listed keys it can still be (a bit each), and whether it
/// can still be a key not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyLex {
    candidates: u64,
    offset: u16,
    free: bool,
    escape: bool,
    utf8: u8,
}

impl KeyLex {
    /// After the opening quote. Listed keys already seen are candidates only
    /// when unlisted keys may come (so that a repeat is recognized and refused).
    pub fn open(rule: &ObjectRule, seen: u64, count: u32) -> Self {
        let all = if rule.props.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << rule.props.len()) - 1
        };
        let free = rule.additional.is_some();
        Self {
            candidates: if free {
                all
            } else {
                rule.keys_left(seen, count)
            },
            offset: 0,
            free,
            escape: false,
            utf8: 0,
        }
    }

    pub fn step(self, rule: &ObjectRule, seen: u64, b: u8) -> Step {
        if b == b'"' && !self.escape && self.utf8 == 0 {
            let exact = (0..rule.props.len()).find(|&i| {
                self.candidates & (1 << i) != 0 && rule.props[i].0.len() == self.offset as usize
            });
            return match exact {
                Some(i) if seen & (1 << i) == 0 => Step::Key(Prop::Declared(i as u8)),
                Some(_) => Step::No,
                None if self.free => Step::Key(Prop::Additional),
                None => Step::No,
            };
        }
        let at = self.offset as usize;
        let mut candidates = 0u64;
        for (i, (key, _)) in rule.props.iter().enumerate() {
            if self.candidates & (1 << i) != 0 && key.get(at) == Some(&b) {
                candidates |= 1 << i;
            }
        }
        let utf8 = if self.free {
            next_utf8(self.utf8, b)
        } else {
            None
        };
        let free = self.free && b != b'\\' && utf8.is_some();
        if candidates == 0 && !free {
            return Step::No;
        }
        Step::Go(Lex::Key(Self {
            candidates,
            // Past every listed key the offset no longer matters (one state).
            offset: if candidates == 0 { 0 } else { self.offset + 1 },
            free,
            escape: !self.escape && b == b'\\',
            utf8: utf8.unwrap_or(0),
        }))
    }
}

impl KeyLex {
    /// Whether this is a key that can no longer be a listed one, between
    /// characters: every byte of plain text is then taken.
    pub fn is_plain(&self) -> bool {
        self.candidates == 0 && self.free && !self.escape && self.utf8 == 0
    }
}

/// Whether `bytes`, read from between two characters of a string, are plain
/// text: no quote, no backslash, valid UTF-8 without control characters (a
/// character may be left unfinished at the end). A free string or key takes
/// every plain token the same way, so its mask needs no walk over them.
pub fn plain_text(bytes: &[u8]) -> bool {
    let mut due = 0u8;
    for &b in bytes {
        if due == 0 && (b == b'"' || b == b'\\') {
            return false;
        }
        match next_utf8(due, b) {
            Some(d) => due = d,
            None => return false,
        }
    }
    true
}

/// Where a UTF-8 character stands after `b`, if `b` is valid string content:
/// 0 when complete, 1–3 continuation bytes due (any of 80–BF), or a code for a
/// first continuation byte with a narrower range (no overlong forms, no
/// surrogates, nothing above U+10FFFF), after which [`RESTRICTED`] says how
/// many remain.
pub(crate) fn next_utf8(due: u8, b: u8) -> Option<u8> {
    if let Some(&(_, lo, hi, rest)) = RESTRICTED.iter().find(|r| r.0 == due) {
        return (lo..=hi).contains(&b).then_some(rest);
    }
    if due > 0 {
        return (0x80..=0xBF).contains(&b).then_some(due - 1);
    }
    match b {
        0x00..=0x1F | 0x7F => None,
        0x20..=0x7E => Some(0),
        0xC2..=0xDF => Some(1),
        0xE0 => Some(4),
        0xED => Some(5),
        0xE1..=0xEF => Some(2),
        0xF0 => Some(6),
        0xF4 => Some(7),
        0xF1..=0xF3 => Some(3),
        _ => None,
    }
}

/// The narrower first continuation bytes: (code, lowest, highest, due after).
const RESTRICTED: [(u8, u8, u8, u8); 4] = [
    (4, 0xA0, 0xBF, 1),
    (5, 0x80, 0x9F, 1),
    (6, 0x90, 0xBF, 2),
    (7, 0x80, 0x8F, 2),
];
