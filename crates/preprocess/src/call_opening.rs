//! How an answer that may be tool calls opens: with the list itself (`[` after
//! blanks), or with a Markdown code fence around it (three backticks, an
//! optional info word such as `json`, a line break, then `[`), as Gemma models
//! often write structured output. Anything else is text. The constraint, the
//! streaming of held text and the parsing of calls all read answers this way.

/// The longest info word of a fence (`json`, `tool_code`, ...).
const MAX_INFO: u8 = 16;

/// Where an opening stands, byte by byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opener {
    /// Blanks only, so far.
    Blank,
    /// Backticks of the fence.
    Ticks(u8),
    /// Letters of the fence's info word.
    Info(u8),
    /// After the fence's line break (blanks may follow).
    Line,
}

/// What a byte does to an opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStep {
    Open(Opener),
    /// The byte is the `[` of the list.
    List {
        fenced: bool,
    },
    Text,
}

fn blank(b: u8) -> bool {
    b.is_ascii_whitespace()
}

fn info(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

impl Opener {
    pub fn step(self, b: u8) -> OpenStep {
        use Opener::*;
        match (self, b) {
            (Blank, b'[') => OpenStep::List { fenced: false },
            (Blank, b) if blank(b) => OpenStep::Open(Blank),
            (Blank, b'`') => OpenStep::Open(Ticks(1)),
            (Ticks(n), b'`') if n < 3 => OpenStep::Open(Ticks(n + 1)),
            (Ticks(3), b'\n') | (Info(_), b'\n') => OpenStep::Open(Line),
            (Ticks(3), b) if info(b) => OpenStep::Open(Info(1)),
            (Info(k), b) if info(b) && k < MAX_INFO => OpenStep::Open(Info(k + 1)),
            (Line, b'[') => OpenStep::List { fenced: true },
            (Line, b) if blank(b) => OpenStep::Open(Line),
            _ => OpenStep::Text,
        }
    }
}

/// Where a whole text stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// It may still open a list.
    Undecided(Opener),
    /// The list's `[` is byte `at`.
    List {
        at: usize,
        fenced: bool,
    },
    Text,
}

/// Reads `bytes` on from `opener`.
pub fn opening_from(opener: Opener, bytes: &[u8]) -> Opening {
    let mut o = opener;
    for (at, &b) in bytes.iter().enumerate() {
        match o.step(b) {
            OpenStep::Open(next) => o = next,
            OpenStep::List { fenced } => return Opening::List { at, fenced },
            OpenStep::Text => return Opening::Text,
        }
    }
    Opening::Undecided(o)
}

/// How `text` opens, from its first byte.
pub fn opening(text: &str) -> Opening {
    opening_from(Opener::Blank, text.as_bytes())
}

/// The closing fence after a fenced list: blanks, three backticks, blanks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closer(u8);

impl Closer {
    pub const START: Self = Self(0);

    pub fn step(self, b: u8) -> Option<Self> {
        match (self.0, b) {
            (0 | 3, b) if blank(b) => Some(self),
            (n, b'`') if n < 3 => Some(Self(n + 1)),
            _ => None,
        }
    }

    /// Whether the answer may end here (no backtick of the fence half written).
    pub fn may_end(self) -> bool {
        self.0 == 0 || self.0 == 3
    }
}

/// The list of a fenced answer (what lies between the fence's first line and
/// its closing backticks); the text itself when it is not fenced.
pub fn unfence(text: &str) -> &str {
    let trimmed = text.trim();
    match opening(trimmed) {
        Opening::List { at, fenced: true } => {
            let inner = &trimmed[at..];
            inner.strip_suffix("```").unwrap_or(inner).trim_end()
        }
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings() {
        assert_eq!(
            opening(" \n[{"),
            Opening::List {
                at: 2,
                fenced: false
            }
        );
        assert_eq!(
            opening("```json\n["),
            Opening::List {
                at: 8,
                fenced: true
            }
        );
        assert_eq!(
            opening("```\n  ["),
            Opening::List {
                at: 6,
                fenced: true
            }
        );
        assert_eq!(opening("``` "), Opening::Text);
        assert_eq!(opening("```python\nprint"), Opening::Text);
        assert_eq!(opening("The labs"), Opening::Text);
        assert!(matches!(
            opening("\n``"),
            Opening::Undecided(Opener::Ticks(2))
        ));
        assert!(matches!(
            opening("```tool_code"),
            Opening::Undecided(Opener::Info(9))
        ));
        assert_eq!(opening(&format!("```{}", "x".repeat(17))), Opening::Text);
    }

    #[test]
    fn fences_come_off_and_other_text_stays() {
        assert_eq!(unfence("```json\n[{\"a\": 1}]\n```\n"), "[{\"a\": 1}]");
        assert_eq!(unfence("```\n[1]"), "[1]");
        assert_eq!(unfence(" [1] "), " [1] ");
        assert_eq!(unfence("```python\n[1]```"), "[1]");
        let mut c = Closer::START;
        for &b in b"\n```\n" {
            c = c.step(b).unwrap();
        }
        assert!(c.may_end());
        assert!(Closer::START.step(b'x').is_none());
        assert!(!Closer::START.step(b'`').unwrap().may_end());
    }
}
