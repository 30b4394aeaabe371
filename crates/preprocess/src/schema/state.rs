//! The recognizer: which bytes can continue a document the schema accepts.
//! `anyOf` makes it nondeterministic, so the state is a small set of threads,
//! one per branch still alive; each thread is a stack of open objects and arrays
//! (shared between copies: copying a state per trie node must be cheap) and the
//! token being read. Whitespace between tokens is one space, or a line break
//! and an indentation of up to [`MAX_INDENT`] spaces or tabs (a model that loops
//! on blanks would otherwise never finish); nesting is limited too. Nothing may
//! come before or after the document.

use std::sync::Arc;

use smallvec::SmallVec;

use super::lex::{KeyLex, Lex, LitLex, NumLex, Prop, Step, StrLex};
use super::node::{ArrayRule, Node, ObjectRule, Schema};
use super::NodeId;

/// Deepest nesting of objects and arrays.
pub const MAX_DEPTH: usize = 32;
/// Spaces or tabs after a line break between JSON tokens.
pub const MAX_INDENT: u8 = 20;
/// `Thread::whitespace`: none yet, one space (nothing more may come), or a line
/// break and `whitespace - AFTER_BREAK` indentation bytes.
const AFTER_SPACE: u8 = 1;
const AFTER_BREAK: u8 = 2;
/// Branches followed at once; more are dropped (what remains is still valid).
const MAX_THREADS: usize = 16;
/// `anyOf` inside `anyOf` (and `$ref` chains) followed this deep at a value's start.
const MAX_EXPANSION: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ObjPhase {
    /// After `{`: a key or `}`.
    Start,
    /// After `,`: a key.
    Key,
    /// After a key: `:`.
    Colon(Prop),
    /// After `:`: the value.
    Member(Prop),
    /// After a value: `,` or `}`.
    Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ArrPhase {
    Start,
    Element,
    Next,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Frame {
    Object {
        node: NodeId,
        seen: u64,
        count: u32,
        phase: ObjPhase,
    },
    Array {
        node: NodeId,
        count: u32,
        phase: ArrPhase,
    },
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Link {
    frame: Frame,
    below: Option<Arc<Link>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Thread {
    stack: Option<Arc<Link>>,
    depth: u8,
    lex: Lex,
    whitespace: u8,
    done: bool,
}

type Threads = SmallVec<[Thread; 2]>;

/// Where an output stands in a schema.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchemaState {
    threads: Threads,
}

fn object(schema: &Schema, node: NodeId) -> Option<&ObjectRule> {
    match schema.node(node) {
        Node::Object(r) => Some(r),
        _ => None,
    }
}

fn array(schema: &Schema, node: NodeId) -> Option<&ArrayRule> {
    match schema.node(node) {
        Node::Array(r) => Some(r),
        _ => None,
    }
}

fn bit(p: Prop) -> u64 {
    match p {
        Prop::Declared(i) => 1 << i,
        Prop::Additional => 0,
    }
}

/// Byte `b` inside token `lex` (under `top`): the token after it, `Some(None)`
/// if it is refused, `None` if it ends the token (or there is none).
fn token_step(schema: &Schema, lex: Lex, top: Option<Frame>, b: u8) -> Option<Option<Lex>> {
    let step = match lex {
        Lex::Str(s) => s.step(schema, b),
        Lex::Num(n) => n.step(schema, b),
        Lex::Lit(l) => l.step(schema, b),
        Lex::Key(k) => match top {
            Some(Frame::Object { node, seen, .. }) => k.step(object(schema, node)?, seen, b),
            _ => return None,
        },
        Lex::Between => return None,
    };
    match step {
        Step::Go(lex) => Some(Some(lex)),
        Step::No => Some(None),
        Step::Done | Step::Ended | Step::Key(_) => None,
    }
}

impl Thread {
    fn top(&self) -> Option<Frame> {
        self.stack.as_ref().map(|l| l.frame)
    }

    fn set_top(&mut self, frame: Frame) {
        let below = self.stack.as_ref().and_then(|l| l.below.clone());
        self.stack = Some(Arc::new(Link { frame, below }));
    }

    fn push(&mut self, frame: Frame) -> bool {
        if usize::from(self.depth) >= MAX_DEPTH {
            return false;
        }
        let below = self.stack.take();
        self.stack = Some(Arc::new(Link { frame, below }));
        self.depth += 1;
        true
    }

    fn pop(&mut self) {
        self.stack = self.stack.as_ref().and_then(|l| l.below.clone());
        self.depth -= 1;
    }

    /// A value just ended.
    fn value_done(&mut self) {
        self.lex = Lex::Between;
        match self.top() {
            None => self.done = true,
            Some(Frame::Object {
                node,
                seen,
                count,
                phase: ObjPhase::Member(p),
            }) => self.set_top(Frame::Object {
                node,
                seen: seen | bit(p),
                count: count + 1,
                phase: ObjPhase::Next,
            }),
            Some(Frame::Array { node, count, .. }) => self.set_top(Frame::Array {
                node,
                count: count + 1,
                phase: ArrPhase::Next,
            }),
            Some(_) => {}
        }
    }

    /// Whether the document may end here.
    fn complete(&self, schema: &Schema) -> bool {
        let ends = match self.lex {
            Lex::Between => return self.done,
            Lex::Num(n) => n.can_end(schema),
            Lex::Lit(l) => l.can_end(schema),
            Lex::Key(_) | Lex::Str(_) => false,
        };
        ends && self.stack.is_none()
    }

    /// Byte `b` inside the token being read, in place: whether it was taken, or
    /// `None` when it ends the token (or there is none), which the general path
    /// handles.
    fn within_token(&mut self, schema: &Schema, b: u8) -> Option<bool> {
        let next = token_step(schema, self.lex, self.top(), b)?;
        if let Some(lex) = next {
            self.lex = lex;
        }
        Some(next.is_some())
    }

    /// The threads that take byte `b` from this one.
    fn feed(mut self, schema: &Schema, b: u8, out: &mut Threads) {
        let step = match self.lex {
            Lex::Between => return self.structural(schema, b, out),
            Lex::Key(k) => match self.top() {
                Some(Frame::Object { node, seen, .. }) => match object(schema, node) {
                    Some(rule) => k.step(rule, seen, b),
                    None => Step::No,
                },
                _ => Step::No,
            },
            Lex::Str(s) => s.step(schema, b),
            Lex::Num(n) => n.step(schema, b),
            Lex::Lit(l) => l.step(schema, b),
        };
        match step {
            Step::Go(lex) => {
                self.lex = lex;
                out.push(self);
            }
            Step::Done => {
                self.value_done();
                out.push(self);
            }
            Step::Ended => {
                self.value_done();
                self.structural(schema, b, out);
            }
            Step::Key(p) => {
                self.lex = Lex::Between;
                if let Some(Frame::Object {
                    node, seen, count, ..
                }) = self.top()
                {
                    self.set_top(Frame::Object {
                        node,
                        seen,
                        count,
                        phase: ObjPhase::Colon(p),
                    });
                    out.push(self);
                }
            }
            Step::No => {}
        }
    }

    /// Takes a whitespace byte if the run so far allows it.
    fn blank(&mut self, b: u8) -> bool {
        let w = self.whitespace;
        self.whitespace = match (w, b) {
            (0, b' ') => AFTER_SPACE,
            (0, b'\n') => AFTER_BREAK,
            (_, b' ' | b'\t') if w >= AFTER_BREAK && w - AFTER_BREAK < MAX_INDENT => w + 1,
            _ => return false,
        };
        true
    }

    fn structural(mut self, schema: &Schema, b: u8, out: &mut Threads) {
        if self.done {
            return;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if self.depth > 0 && self.blank(b) {
                out.push(self);
            }
            return;
        }
        self.whitespace = 0;
        let Some(frame) = self.top() else {
            return self.value(schema, schema.root, b, 0, out);
        };
        match frame {
            Frame::Object {
                node,
                seen,
                count,
                phase,
            } => {
                let Some(rule) = object(schema, node) else {
                    return;
                };
                let set = |t: &mut Self, phase| {
                    t.set_top(Frame::Object {
                        node,
                        seen,
                        count,
                        phase,
                    })
                };
                match (phase, b) {
                    (ObjPhase::Start | ObjPhase::Next, b'}') if rule.may_close(seen, count) => {
                        self.pop();
                        self.value_done();
                    }
                    (ObjPhase::Start | ObjPhase::Key, b'"') if rule.key_may_come(seen, count) => {
                        self.lex = Lex::Key(KeyLex::open(rule, seen, count));
                    }
                    (ObjPhase::Next, b',') if rule.key_may_come(seen, count) => {
                        set(&mut self, ObjPhase::Key)
                    }
                    (ObjPhase::Colon(p), b':') => set(&mut self, ObjPhase::Member(p)),
                    (ObjPhase::Member(p), _) => {
                        if let Some(v) = rule.value_of(p) {
                            self.value(schema, v, b, 0, out);
                        }
                        return;
                    }
                    _ => return,
                }
                out.push(self);
            }
            Frame::Array { node, count, phase } => {
                let Some(rule) = array(schema, node) else {
                    return;
                };
                match (phase, b) {
                    (ArrPhase::Start | ArrPhase::Next, b']') if count >= rule.min => {
                        self.pop();
                        self.value_done();
                        out.push(self);
                    }
                    (ArrPhase::Next, b',') if rule.element_may_come(count) => {
                        self.set_top(Frame::Array {
                            node,
                            count,
                            phase: ArrPhase::Element,
                        });
                        out.push(self);
                    }
                    (ArrPhase::Start | ArrPhase::Element, _) if rule.element_may_come(count) => {
                        if let Some(e) = rule.element(count) {
                            self.value(schema, e, b, 0, out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A value of schema `node` starting with byte `b`.
    fn value(self, schema: &Schema, node: NodeId, b: u8, expansion: usize, out: &mut Threads) {
        let mut t = self;
        match schema.node(node) {
            Node::AnyOf(list) => {
                if expansion < MAX_EXPANSION {
                    for &n in list {
                        t.clone().value(schema, n, b, expansion + 1, out);
                    }
                }
                return;
            }
            Node::Object(_) if b == b'{' => {
                let frame = Frame::Object {
                    node,
                    seen: 0,
                    count: 0,
                    phase: ObjPhase::Start,
                };
                if !t.push(frame) {
                    return;
                }
            }
            Node::Array(_) if b == b'[' => {
                let frame = Frame::Array {
                    node,
                    count: 0,
                    phase: ArrPhase::Start,
                };
                if !t.push(frame) {
                    return;
                }
            }
            Node::String(_) if b == b'"' => match StrLex::open(schema, node) {
                Some(s) => t.lex = Lex::Str(s),
                None => return,
            },
            Node::Number(_) => match NumLex::open(schema, node, b) {
                Some(n) => t.lex = Lex::Num(n),
                None => return,
            },
            Node::Literals(_) => match LitLex::open(schema, node, b) {
                Some(l) => t.lex = Lex::Lit(l),
                None => return,
            },
            _ => return,
        }
        out.push(t);
    }
}

/// The token that the only thread of a state is reading: stepped on its own,
/// without copying the state, while the bytes stay inside the token (a trie walk
/// spends most of its time there).
#[derive(Debug, Clone, Copy)]
pub struct TokenCursor(Lex);

impl TokenCursor {
    /// Whether the cursor stands in a free string or key between characters,
    /// where every plain-text token is taken.
    pub fn is_plain(&self, schema: &Schema) -> bool {
        match self.0 {
            Lex::Str(s) => s.is_plain(schema),
            Lex::Key(k) => k.is_plain(),
            _ => false,
        }
    }
}

/// What a byte does to a token's cursor.
pub enum CursorStep {
    /// Taken, inside the token.
    Go(TokenCursor),
    Refused,
    /// It ends the token: feed a state made with [`SchemaState::with_cursor`].
    Ends,
}

impl SchemaState {
    /// The cursor of the token being read, if there is one thread and it is
    /// inside a token.
    pub fn cursor(&self) -> Option<TokenCursor> {
        match self.threads.as_slice() {
            [t] if t.lex != Lex::Between => Some(TokenCursor(t.lex)),
            _ => None,
        }
    }

    /// Byte `b` after `cursor` (a cursor of this state).
    pub fn step_cursor(&self, schema: &Schema, cursor: TokenCursor, b: u8) -> CursorStep {
        let [t] = self.threads.as_slice() else {
            return CursorStep::Ends;
        };
        match token_step(schema, cursor.0, t.top(), b) {
            Some(Some(lex)) => CursorStep::Go(TokenCursor(lex)),
            Some(None) => CursorStep::Refused,
            None => CursorStep::Ends,
        }
    }

    /// This state with its token at `cursor`.
    pub fn with_cursor(&self, cursor: TokenCursor) -> Self {
        let mut s = self.clone();
        if let [t] = s.threads.as_mut_slice() {
            t.lex = cursor.0;
        }
        s
    }

    /// Before the document.
    pub fn new() -> Self {
        let mut threads = Threads::new();
        threads.push(Thread {
            stack: None,
            depth: 0,
            lex: Lex::Between,
            whitespace: 0,
            done: false,
        });
        Self { threads }
    }

    /// Whether the document is complete (it may end here).
    pub fn complete(&self, schema: &Schema) -> bool {
        self.threads.iter().any(|t| t.complete(schema))
    }

    /// Takes one byte if it can continue the document; false (and the state
    /// unchanged) if it cannot.
    pub fn feed(&mut self, schema: &Schema, b: u8) -> bool {
        // Most bytes go on inside a token of the only thread: no new threads.
        if let [t] = self.threads.as_mut_slice() {
            if let Some(taken) = t.within_token(schema, b) {
                return taken;
            }
        }
        let mut next = Threads::new();
        for t in &self.threads {
            t.clone().feed(schema, b, &mut next);
        }
        if next.is_empty() {
            return false;
        }
        let mut kept = Threads::new();
        for t in next {
            if kept.len() < MAX_THREADS && !kept.contains(&t) {
                kept.push(t);
            }
        }
        self.threads = kept;
        true
    }

    /// Feeds every byte; false at the first that cannot come (the state is
    /// then where that byte was refused).
    pub fn feed_all(&mut self, schema: &Schema, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed(schema, b))
    }
}

impl Default for SchemaState {
    fn default() -> Self {
        Self::new()
    }
}
