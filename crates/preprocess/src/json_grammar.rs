//! A byte-level recognizer of one JSON object (RFC 8259), for JSON mode: `feed`
//! says whether a byte can continue a valid document, `complete` whether the
//! document may end here. The state is small and `Copy`, so masking a vocabulary
//! can try each token's bytes on a copy. Whitespace between tokens is limited
//! (a model that loops on newlines would otherwise never close the object), and
//! so is nesting.

/// Deepest nesting of objects and arrays.
pub const MAX_DEPTH: usize = 32;
/// Whitespace bytes in a row between JSON tokens.
pub const MAX_WHITESPACE: u8 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Frame {
    /// After `{`: a key or `}`.
    ObjectStart,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Member,
    /// After `[`: a value or `]`.
    ArrayStart,
    /// After `,` in an array: a value.
    Element,
    /// After a member value: `,` or `}`.
    ObjectNext,
    /// After an element: `,` or `]`.
    ArrayNext,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lex {
    /// Between tokens.
    Between,
    /// Inside a string: continuation bytes of a UTF-8 character still due,
    /// after a backslash, or hex digits of `\u` still due.
    Str {
        utf8: u8,
        escape: bool,
        hex: u8,
    },
    Number(Num),
    /// The rest of `true`, `false` or `null`.
    Literal(&'static [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonState {
    stack: [Frame; MAX_DEPTH],
    depth: u8,
    lex: Lex,
    done: bool,
    whitespace: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonState {
    /// Before the document: only `{` may come.
    pub fn new() -> Self {
        Self {
            stack: [Frame::ObjectStart; MAX_DEPTH],
            depth: 0,
            lex: Lex::Between,
            done: false,
            whitespace: 0,
        }
    }

    /// The object is closed: nothing more may follow.
    pub fn complete(&self) -> bool {
        self.done
    }

    /// Feeds every byte; false (and the state undefined) at the first one that
    /// cannot come.
    pub fn feed_all(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(b))
    }

    /// Takes one byte if it can continue the document.
    pub fn feed(&mut self, b: u8) -> bool {
        match self.lex {
            Lex::Str { utf8, escape, hex } => self.string_byte(b, utf8, escape, hex),
            Lex::Number(n) => match next_number(n, b) {
                Some(n) => {
                    self.lex = Lex::Number(n);
                    true
                }
                None if matches!(n, Num::Zero | Num::Int | Num::Frac | Num::Exp) => {
                    self.lex = Lex::Between;
                    self.value_done();
                    self.structural(b)
                }
                None => false,
            },
            Lex::Literal(rest) => match rest.split_first() {
                Some((&want, tail)) if want == b => {
                    self.lex = Lex::Literal(tail);
                    if tail.is_empty() {
                        self.lex = Lex::Between;
                        self.value_done();
                    }
                    true
                }
                _ => false,
            },
            Lex::Between => self.structural(b),
        }
    }

    fn top(&self) -> Option<Frame> {
        self.depth
            .checked_sub(1)
            .map(|d| self.stack[usize::from(d)])
    }

    fn set_top(&mut self, f: Frame) {
        if let Some(d) = self.depth.checked_sub(1) {
            self.stack[usize::from(d)] = f;
        }
    }

    fn push(&mut self, f: Frame) -> bool {
        if usize::from(self.depth) >= MAX_DEPTH {
            return false;
        }
        self.stack[usize::from(self.depth)] = f;
        self.depth += 1;
        true
    }

    /// A value (or a key) just ended.
    fn value_done(&mut self) {
        match self.top() {
            None => self.done = true,
            Some(Frame::ObjectStart | Frame::Key) => self.set_top(Frame::Colon),
            Some(Frame::Member) => self.set_top(Frame::ObjectNext),
            Some(Frame::ArrayStart | Frame::Element) => self.set_top(Frame::ArrayNext),
            Some(_) => {}
        }
    }

    fn structural(&mut self, b: u8) -> bool {
        if self.done {
            return false;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if self.depth == 0 {
                return false; // the answer starts with its `{`
            }
            self.whitespace += 1;
            return self.whitespace <= MAX_WHITESPACE;
        }
        self.whitespace = 0;
        match (self.top(), b) {
            (None, b'{') => self.push(Frame::ObjectStart),
            (None, _) => false,
            (Some(Frame::ObjectStart | Frame::Key), b'"') => self.open_string(),
            (Some(Frame::ObjectStart), b'}') | (Some(Frame::ObjectNext), b'}') => self.close(),
            (Some(Frame::ArrayStart), b']') | (Some(Frame::ArrayNext), b']') => self.close(),
            (Some(Frame::Colon), b':') => {
                self.set_top(Frame::Member);
                true
            }
            (Some(Frame::ObjectNext), b',') => {
                self.set_top(Frame::Key);
                true
            }
            (Some(Frame::ArrayNext), b',') => {
                self.set_top(Frame::Element);
                true
            }
            (Some(Frame::Member | Frame::ArrayStart | Frame::Element), b) => self.value_start(b),
            _ => false,
        }
    }

    fn close(&mut self) -> bool {
        self.depth -= 1;
        self.value_done();
        true
    }

    fn open_string(&mut self) -> bool {
        self.lex = Lex::Str {
            utf8: 0,
            escape: false,
            hex: 0,
        };
        true
    }

    fn value_start(&mut self, b: u8) -> bool {
        match b {
            b'{' => self.push(Frame::ObjectStart),
            b'[' => self.push(Frame::ArrayStart),
            b'"' => self.open_string(),
            b'-' => self.number(Num::Minus),
            b'0' => self.number(Num::Zero),
            b'1'..=b'9' => self.number(Num::Int),
            b't' => self.literal(b"rue"),
            b'f' => self.literal(b"alse"),
            b'n' => self.literal(b"ull"),
            _ => false,
        }
    }

    fn number(&mut self, n: Num) -> bool {
        self.lex = Lex::Number(n);
        true
    }

    fn literal(&mut self, rest: &'static [u8]) -> bool {
        self.lex = Lex::Literal(rest);
        true
    }

    fn string_byte(&mut self, b: u8, utf8: u8, escape: bool, hex: u8) -> bool {
        let next = |utf8, escape, hex| Lex::Str { utf8, escape, hex };
        if hex > 0 {
            if !b.is_ascii_hexdigit() {
                return false;
            }
            self.lex = next(0, false, hex - 1);
            return true;
        }
        if escape {
            return match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                    self.lex = next(0, false, 0);
                    true
                }
                b'u' => {
                    self.lex = next(0, false, 4);
                    true
                }
                _ => false,
            };
        }
        if utf8 > 0 {
            if !(0x80..=0xBF).contains(&b) {
                return false;
            }
            self.lex = next(utf8 - 1, false, 0);
            return true;
        }
        match b {
            b'"' => {
                self.lex = Lex::Between;
                self.value_done();
                true
            }
            b'\\' => {
                self.lex = next(0, true, 0);
                true
            }
            0x00..=0x1F | 0x7F => false,
            0x20..=0x7E => true,
            0xC2..=0xDF => {
                self.lex = next(1, false, 0);
                true
            }
            0xE0..=0xEF => {
                self.lex = next(2, false, 0);
                true
            }
            0xF0..=0xF4 => {
                self.lex = next(3, false, 0);
                true
            }
            _ => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(doc: &str) -> bool {
        let mut s = JsonState::new();
        s.feed_all(doc.as_bytes()) && s.complete()
    }

    #[test]
    fn valid_objects_are_accepted_whole() {
        for doc in [
            "{}",
            r#"{"a":1}"#,
            r#"{ "finding" : "right lower lobe consolidation", "severity": 2.5e-3,
                "follow_up": [true, false, null, -0.5, 10, {"x": []}], "é ✓ 😀": "\u00e9\"\\\/" }"#,
            r#"{"n": [[[[]]]], "z": 0, "neg": -12.75E+2}"#,
        ] {
            assert!(accepts(doc), "{doc}");
            // serde_json agrees that it is JSON.
            assert!(
                serde_json::from_str::<serde_json::Value>(doc).is_ok(),
                "{doc}"
            );
        }
    }

    #[test]
    fn invalid_documents_are_refused_where_they_go_wrong() {
        for doc in [
            "[]",
            "1",
            r#""s""#,
            r#"{"a" 1}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{a:1}"#,
            r#"{"a":tru}"#,
            "{\"a\":\"line\nbreak\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12G4"}"#,
            r#"{"a":1.}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
            r#"{} {}"#,
            "{}\n",
            " {}",
        ] {
            assert!(!accepts(doc), "{doc:?}");
        }
        let mut unfinished = JsonState::new();
        assert!(unfinished.feed_all(br#"{"a": [1, 2"#));
        assert!(!unfinished.complete());
        // Invalid UTF-8 inside a string.
        let mut s = JsonState::new();
        assert!(!s.feed_all(&[b'{', b'"', 0xC3, b'"']));
    }

    #[test]
    fn whitespace_and_nesting_are_bounded() {
        let mut s = JsonState::new();
        assert!(s.feed_all(b"{"));
        assert!(s.feed_all(&[b' '; MAX_WHITESPACE as usize]));
        assert!(!s.feed(b' '));
        let deep = "[".repeat(MAX_DEPTH - 1);
        let mut s = JsonState::new();
        assert!(s.feed_all(format!("{{\"a\":{deep}").as_bytes()));
        assert!(!s.feed(b'['));
    }
}
