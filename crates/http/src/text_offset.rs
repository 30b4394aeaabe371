//! `text_offset` of the legacy completions' logprobs: where each token's text
//! starts in the choice's text, in characters (Unicode scalar values, as OpenAI's
//! Python indices count).
//!
//! The text is the tokenizer's decoding, whose byte-fallback rule decides what a
//! run of single-byte tokens becomes: its characters when the run's bytes are
//! valid UTF-8, else one U+FFFD per byte. The offsets follow that rule as the
//! tokens arrive (streamed offsets cannot wait for the run's end): a byte token
//! inside a still-valid run starts at the character it helps complete, and once
//! the run has gone invalid each of its bytes counts one character.

/// The characters of the text so far, and the bytes of an unfinished byte run.
#[derive(Debug, Default)]
pub struct TextOffsets {
    /// Characters before the current byte run.
    before_run: usize,
    run: Vec<u8>,
}

impl TextOffsets {
    /// Starts after `prefix_chars` characters (an echoed prompt).
    pub fn new(prefix_chars: usize) -> Self {
        Self {
            before_run: prefix_chars,
            run: Vec::new(),
        }
    }

    /// The offset of a token with these bytes, then moves past it.
    pub fn next(&mut self, bytes: &[u8]) -> usize {
        if let [b] = bytes {
            if *b >= 0x80 {
                // A byte-fallback token: ASCII bytes count one character alone or
                // in a run, so only these change with the run.
                let at = self.before_run + run_offset(&self.run);
                self.run.push(*b);
                return at;
            }
        }
        self.before_run += run_chars(&self.run);
        self.run.clear();
        let at = self.before_run;
        self.before_run += String::from_utf8_lossy(bytes).chars().count();
        at
    }
}

/// Where the next byte of a run starts: after its complete characters while the
/// run may still be valid, else after one character per byte.
fn run_offset(run: &[u8]) -> usize {
    match std::str::from_utf8(run) {
        Ok(s) => s.chars().count(),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&run[..e.valid_up_to()])
            .map(|s| s.chars().count())
            .unwrap_or(run.len()),
        Err(_) => run.len(),
    }
}

/// The characters a finished run decodes to.
fn run_chars(run: &[u8]) -> usize {
    std::str::from_utf8(run).map_or(run.len(), |s| s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(tokens: &[&[u8]], prefix: usize) -> Vec<usize> {
        let mut o = TextOffsets::new(prefix);
        tokens.iter().map(|t| o.next(t)).collect()
    }

    #[test]
    fn plain_tokens_add_their_characters() {
        assert_eq!(offsets(&[b"ab", " é".as_bytes(), b"c"], 3), [3, 5, 7]);
    }

    #[test]
    fn a_character_split_over_byte_tokens_starts_where_it_starts() {
        // "’" is E2 80 99: one character, whichever of its bytes.
        assert_eq!(
            offsets(&[b"a", &[0xe2], &[0x80], &[0x99], b"b"], 0),
            [0, 1, 1, 1, 2]
        );
    }

    #[test]
    fn invalid_bytes_count_one_replacement_character_each() {
        // The decoded text is "est" "\u{FFFD}" "be": 0xd1 alone is invalid.
        assert_eq!(offsets(&[b"est", &[0xd1], b"be", b"!"], 0), [0, 3, 4, 6]);
        // Two invalid bytes in a run: two replacement characters.
        assert_eq!(offsets(&[&[0xff], &[0xfe], b"x"], 0), [0, 1, 2]);
        // A run cut short by a plain token is invalid as a whole.
        assert_eq!(offsets(&[&[0xe2], &[0x80], b"x"], 0), [0, 0, 2]);
    }
}
