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
        Self::whole(&format!("{start}(?:{body}){end}"))
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
