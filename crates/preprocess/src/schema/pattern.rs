//! `pattern` and `format`: a regular expression over a string's decoded
//! characters, as a DFA stepped byte by byte. Only states from which the string
//! can still end matched are allowed, so the mask never leads into a string that
//! cannot close.

use std::collections::{HashMap, HashSet};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// Largest DFA a pattern may compile to (bytes).
const MAX_DFA_BYTES: usize = 4 << 20;
/// Most DFA states a pattern may have.
const MAX_STATES: usize = 20_000;

#[derive(Debug)]
pub(crate) struct Pattern {
    dfa: dense::DFA<Vec<u32>>,
    start: u32,
    /// States from which a match at the end of the string is reachable.
    live: HashSet<u32>,
}

impl Pattern {
    /// A JSON Schema pattern (matched anywhere in the string unless anchored
    /// with `^` and `$`).
    pub fn search(pattern: &str) -> Result<Self, String> {
        let (start, rest) = match pattern.strip_prefix('^') {
            Some(rest) => ("", rest),
            None => ("(?s:.)*", pattern),
        };
        let anchored_end = rest.ends_with('$') && !rest.ends_with("\\$");
        let (body, end) = match anchored_end {
            true => (&rest[..rest.len() - 1], ""),
            false => (rest, "(?s:.)*"),
        };
        Self::whole(&format!("{start}(?:{}){end}", ecma_classes(body)))
    }

    /// A regular expression that the whole string must match.
    pub fn whole(regex: &str) -> Result<Self, String> {
        let config = dense::Config::new()
            .start_kind(StartKind::Anchored)
            .match_kind(MatchKind::All)
            .dfa_size_limit(Some(MAX_DFA_BYTES))
            .determinize_size_limit(Some(MAX_DFA_BYTES));
        let dfa = dense::Builder::new()
            .configure(config)
            .build(regex)
            .map_err(|e| e.to_string())?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| e.to_string())?;
        let live = live_states(&dfa, start)?;
        Ok(Self {
            dfa,
            start: start.as_u32(),
            live,
        })
    }

    /// The state before the string, if a string can match at all.
    pub fn start(&self) -> Option<u32> {
        self.live.contains(&self.start).then_some(self.start)
    }

    /// The state after `bytes`, if the string can still end matched.
    pub fn step(&self, state: u32, bytes: &[u8]) -> Option<u32> {
        let mut sid = StateID::new_unchecked(state as usize);
        for &b in bytes {
            sid = self.dfa.next_state(sid, b);
            if !self.live.contains(&sid.as_u32()) {
                return None;
            }
        }
        Some(sid.as_u32())
    }

    /// Whether the string may end in `state`.
    pub fn accepts(&self, state: u32) -> bool {
        let end = self
            .dfa
            .next_eoi_state(StateID::new_unchecked(state as usize));
        self.dfa.is_match_state(end)
    }
}

/// ECMA-262 whitespace (what `\s` means in a JSON Schema pattern).
const ECMA_SPACE: &str = r"\t\n\x0B\x0C\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";

/// A JSON Schema pattern is an ECMA-262 regular expression, where `\d` and `\w`
/// are ASCII and `\s` is its own set; the regex syntax here reads them as
/// Unicode classes, so they are spelled out (inside brackets too).
fn ecma_classes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut depth = 0usize;
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(e) = chars.next() else {
                    out.push(c);
                    break;
                };
                let inside = depth > 0;
                let spelled = match (e, inside) {
                    ('d', false) => "[0-9]".to_string(),
                    ('D', false) => "[^0-9]".to_string(),
                    ('w', false) => "[0-9A-Za-z_]".to_string(),
                    ('W', false) => "[^0-9A-Za-z_]".to_string(),
                    ('s', false) => format!("[{ECMA_SPACE}]"),
                    ('S', false) => format!("[^{ECMA_SPACE}]"),
                    ('b', false) => r"(?-u:\b)".to_string(),
                    ('B', false) => r"(?-u:\B)".to_string(),
                    ('d', true) => "0-9".to_string(),
                    ('w', true) => "0-9A-Za-z_".to_string(),
                    ('s', true) => ECMA_SPACE.to_string(),
                    _ => format!("\\{e}"),
                };
                out.push_str(&spelled);
            }
            '[' => {
                depth += 1;
                out.push(c);
            }
            ']' if depth > 0 => {
                depth -= 1;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The states reachable from `start` that can still reach a match at the end.
fn live_states(dfa: &dense::DFA<Vec<u32>>, start: StateID) -> Result<HashSet<u32>, String> {
    let mut into: HashMap<StateID, Vec<StateID>> = HashMap::new();
    let mut seen = HashSet::from([start]);
    let mut todo = vec![start];
    let mut accepting = Vec::new();
    while let Some(s) = todo.pop() {
        if dfa.is_match_state(dfa.next_eoi_state(s)) {
            accepting.push(s);
        }
        for b in 0..=255u8 {
            let t = dfa.next_state(s, b);
            if dfa.is_dead_state(t) || dfa.is_quit_state(t) {
                continue;
            }
            into.entry(t).or_default().push(s);
            if seen.insert(t) {
                if seen.len() > MAX_STATES {
                    return Err(format!(
                        "the pattern is too complex (over {MAX_STATES} states)"
                    ));
                }
                todo.push(t);
            }
        }
    }
    let mut live: HashSet<StateID> = accepting.iter().copied().collect();
    while let Some(s) = accepting.pop() {
        for &p in into.get(&s).map_or(&[][..], Vec::as_slice) {
            if live.insert(p) {
                accepting.push(p);
            }
        }
    }
    Ok(live.iter().map(StateID::as_u32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(p: &Pattern, s: &str) -> bool {
        p.start()
            .and_then(|st| p.step(st, s.as_bytes()))
            .is_some_and(|st| p.accepts(st))
    }

    #[test]
    fn classes_mean_what_ecma_262_says() {
        let digits = Pattern::search(r"^\d{3}$").unwrap();
        assert!(matches(&digits, "123") && !matches(&digits, "12٣") && !matches(&digits, "12"));
        let word = Pattern::search(r"^[\w-]+$").unwrap();
        assert!(matches(&word, "a_B-9") && !matches(&word, "é"));
        let space = Pattern::search(r"^a\sb$").unwrap();
        assert!(
            matches(&space, "a b") && matches(&space, "a\u{3000}b") && !matches(&space, "a\u{85}b")
        );
        // Unanchored: anywhere in the string.
        let inside = Pattern::search("x[0-9]").unwrap();
        assert!(matches(&inside, "abx1cd") && !matches(&inside, "abx"));
        // A start that can never match is dead at once.
        let upper = Pattern::search("^[A-Z]").unwrap();
        let st = upper.start().unwrap();
        assert!(upper.step(st, b"a").is_none() && upper.step(st, b"Ab").is_some());
    }
}
