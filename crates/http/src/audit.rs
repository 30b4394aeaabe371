//! The audit file: one JSON line per request (who, what, when; never content),
//! chained. Each line's `prev` is the SHA-256 of the line before it (its exact
//! bytes), or, with an audit key, their HMAC-SHA256 under that key; the first
//! line of a new file has 64 zeros. An edited, inserted, removed or reordered
//! line breaks the chain at the line after it; with a key, nobody without the
//! key can mend the chain after an edit. [`verify`] walks a file and says where
//! it breaks. A server restarted on an existing file chains on from its last
//! line (a line cut short by a crash is ended and chained from as it is; `prev`
//! comes first in every line, so even a cut line shows its own link). Lines
//! written before chaining existed (no `prev`) may only come first, and a file
//! with no chained line does not verify.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Mutex;

use ring::{digest, hmac};
use serde::Serialize;

/// The `prev` of a file's first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The shortest audit key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;
/// How far from its end an existing file is read for its last line.
const TAIL_BYTES: u64 = 64 * 1024;

/// How lines are chained: plain SHA-256, or HMAC-SHA256 under the audit key.
#[derive(Clone)]
pub struct Chain(Option<hmac::Key>);

impl Chain {
    /// `key`: the audit key's bytes (at least [`MIN_KEY_BYTES`]), or none.
    pub fn new(key: Option<&[u8]>) -> Result<Self, String> {
        match key {
            Some(k) if k.len() < MIN_KEY_BYTES => Err(format!(
                "the audit key has {} bytes; it needs at least {MIN_KEY_BYTES} bytes",
                k.len()
            )),
            Some(k) => Ok(Self(Some(hmac::Key::new(hmac::HMAC_SHA256, k)))),
            None => Ok(Self(None)),
        }
    }

    fn link(&self, line: &[u8]) -> String {
        let tag = match &self.0 {
            Some(key) => hmac::sign(key, line).as_ref().to_vec(),
            None => digest::digest(&digest::SHA256, line).as_ref().to_vec(),
        };
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One request, as the audit file records it.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    pub time: f64,
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub client: Option<String>,
    pub method: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub latency_ms: f64,
    pub prompt_tokens: Option<usize>,
    pub completion_tokens: Option<usize>,
}

#[derive(Serialize)]
struct Chained<'a> {
    prev: &'a str,
    #[serde(flatten)]
    entry: &'a AuditEntry<'a>,
}

struct Tail {
    file: File,
    prev: String,
}

/// The append-only, chained audit file.
pub struct AuditLog {
    tail: Mutex<Tail>,
    chain: Chain,
}

impl AuditLog {
    /// Opens (or creates) `path` for appending, chaining on from its last line.
    pub fn open(path: &Path, chain: Chain) -> std::io::Result<Self> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true).read(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        let (before, last) = last_lines(&mut file)?;
        if let (Some(before), Some(last)) = (&before, &last) {
            if link_of(last).is_some_and(|l| l != chain.link(before)) {
                tracing::warn!(
                    "the audit log's last line does not follow the one before it under this key \
                     (another audit key, or an edit); new lines chain on from it"
                );
            }
        }
        let prev = match last {
            Some(line) => chain.link(&line),
            None => GENESIS.to_string(),
        };
        Ok(Self {
            tail: Mutex::new(Tail { file, prev }),
            chain,
        })
    }

    /// Appends `entry`, linked to the line before it.
    pub fn write(&self, entry: &AuditEntry) {
        let Ok(mut tail) = self.tail.lock() else {
            return;
        };
        let Ok(mut line) = serde_json::to_vec(&Chained {
            entry,
            prev: &tail.prev,
        }) else {
            return;
        };
        let link = self.chain.link(&line);
        line.push(b'\n');
        match tail.file.write_all(&line) {
            Ok(()) => tail.prev = link,
            Err(e) => tracing::error!(error = %e, "could not write the audit log"),
        }
    }
}

/// A file's line before the last, and its last (without newlines).
type LastLines = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The last two lines of `file`, read from its end.
fn last_lines(file: &mut File) -> std::io::Result<LastLines> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok((None, None));
    }
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail)?;
    if tail.last() == Some(&b'\n') {
        tail.pop();
    } else {
        // A torn last write: end it, so the next entry starts a line of its own.
        file.write_all(b"\n")?;
    }
    let mut lines = tail.rsplit(|&b| b == b'\n');
    let last = lines.next().map(<[u8]>::to_vec);
    let before = match len > TAIL_BYTES {
        // The line before may be cut by the window: only a whole one counts.
        true => lines.next().filter(|_| lines.next().is_some()),
        false => lines.next(),
    };
    Ok((before.map(<[u8]>::to_vec), last))
}

/// The `prev` a line starts with (whole or cut short after it).
fn link_of(line: &[u8]) -> Option<&str> {
    let rest = line.strip_prefix(b"{\"prev\":\"")?;
    let hex = rest.get(..64)?;
    (rest.get(64) == Some(&b'"') && hex.iter().all(u8::is_ascii_hexdigit))
        .then(|| std::str::from_utf8(hex).ok())
        .flatten()
}

/// What [`verify`] found in an intact file.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// Chained lines.
    pub entries: usize,
    /// Lines before the first chained one (written before chaining existed).
    pub unchained: usize,
    /// Lines cut short by a crash while writing (1-based), whose links hold.
    pub cut: Vec<usize>,
}

/// At most this many broken lines are named.
const MAX_NAMED: usize = 10;

/// Walks an audit file and checks every link. The error names the lines
/// (1-based) where the chain breaks, and why.
pub fn verify(path: &Path, chain: &Chain) -> Result<Verified, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut found = Verified {
        entries: 0,
        unchained: 0,
        cut: Vec::new(),
    };
    let mut broken: Vec<String> = Vec::new();
    let mut expected: Option<String> = None;
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        let n = i + 1;
        let whole = serde_json::from_slice::<serde_json::Value>(&line).is_ok();
        match link_of(&line) {
            None if whole && found.entries == 0 => found.unchained += 1,
            None if whole => broken.push(format!("line {n} has no link, after chained lines")),
            None => broken.push(format!("line {n} is not an audit entry")),
            Some(prev) => {
                if prev != expected.as_deref().unwrap_or(GENESIS) {
                    broken.push(format!(
                        "line {n} does not follow the line before it (a line was edited, \
                         inserted or removed at or before line {n}, or another key was used)"
                    ));
                } else if !whole {
                    found.cut.push(n);
                }
                found.entries += 1;
            }
        }
        expected = Some(chain.link(&line));
    }
    if found.entries == 0 && found.unchained > 0 {
        broken.push("no line is chained: links were removed, or the log predates chaining".into());
    }
    if broken.is_empty() {
        return Ok(found);
    }
    let more = broken.len().saturating_sub(MAX_NAMED);
    broken.truncate(MAX_NAMED);
    if more > 0 {
        broken.push(format!("and {more} more"));
    }
    Err(broken.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> AuditEntry<'_> {
        AuditEntry {
            time: 1.5,
            request_id: id,
            key_id: None,
            client: None,
            method: "POST",
            route: "/v1/chat/completions",
            status: 200,
            latency_ms: 3.0,
            prompt_tokens: Some(7),
            completion_tokens: Some(2),
        }
    }

    fn write(path: &Path, chain: &Chain, ids: &[&str]) {
        let log = AuditLog::open(path, chain.clone()).unwrap();
        for id in ids {
            log.write(&entry(id));
        }
    }

    #[test]
    fn a_chain_verifies_across_reopening_and_breaks_where_edited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let chain = Chain::new(Some(b"0123456789abcdef-secret")).unwrap();
        write(&path, &chain, &["a", "b"]);
        write(&path, &chain, &["c"]);
        assert_eq!(
            verify(&path, &chain),
            Ok(Verified {
                entries: 3,
                unchained: 0,
                cut: Vec::new()
            })
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains(GENESIS));
        // Without the key, or with another, the links do not match.
        assert!(verify(&path, &Chain::new(None).unwrap()).is_err());
        let edited = text.replacen("\"status\":200", "\"status\":500", 1);
        std::fs::write(&path, &edited).unwrap();
        let e = verify(&path, &chain).unwrap_err();
        assert!(e.starts_with("line 2 "), "{e}");
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&path, &chain).unwrap_err().starts_with("line 2 "));
    }

    #[test]
    fn unchained_lines_may_only_come_first_and_cut_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let chain = Chain::new(None).unwrap();
        std::fs::write(&path, "{\"request_id\":\"old\"}\n").unwrap();
        write(&path, &chain, &["a", "b"]);
        assert_eq!(
            verify(&path, &chain),
            Ok(Verified {
                entries: 2,
                unchained: 1,
                cut: Vec::new()
            })
        );
        // A crash cuts the last line short; the restarted server chains on.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() - 20]).unwrap();
        write(&path, &chain, &["c", "d"]);
        assert_eq!(
            verify(&path, &chain),
            Ok(Verified {
                entries: 4,
                unchained: 1,
                cut: vec![3]
            })
        );
        // Garbage in place of a line is no cut line: its link is gone.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let garbage = format!(
            "{}\n{}\nxx\n{}\n{}\n",
            lines[0], lines[1], lines[3], lines[4]
        );
        std::fs::write(&path, garbage).unwrap();
        let e = verify(&path, &chain).unwrap_err();
        assert!(
            e.starts_with("line 3 is not an audit entry; line 4 "),
            "{e}"
        );
    }

    #[test]
    fn a_log_whose_links_were_all_removed_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let chain = Chain::new(None).unwrap();
        write(&path, &chain, &["a", "b"]);
        let text = std::fs::read_to_string(&path).unwrap();
        let stripped: String = text
            .lines()
            .map(|l| format!("{{{}\n", &l[l.find(',').unwrap() + 1..]))
            .collect();
        std::fs::write(&path, stripped).unwrap();
        assert!(verify(&path, &chain)
            .unwrap_err()
            .contains("no line is chained"));
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Chain::new(Some(b"short")).is_err());
    }
}
