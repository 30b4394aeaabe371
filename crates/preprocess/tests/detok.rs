//! Streaming detokenization with a SentencePiece-style tokenizer as Gemma's own
//! (byte fallback: `<0xNN>` pieces for characters outside the vocabulary;
//! tools/fixtures/sp_tokenizer.py): the deltas concatenate to the whole decode,
//! tokenizers' semantics for invalid byte runs included, and nothing is dropped.

use std::path::PathBuf;

use medgemma_preprocess::{IncrementalDetokenizer, TextProcessor};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(rel)
}

fn sentencepiece() -> TextProcessor {
    TextProcessor::load(&fixture("tokenizers/sentencepiece"), &[]).unwrap()
}

/// The deltas of streaming `ids`, and their concatenation with the held-back rest.
fn stream(text: &TextProcessor, ids: &[u32]) -> (Vec<String>, String) {
    let mut d = IncrementalDetokenizer::new(true);
    let deltas: Vec<String> = ids.iter().map(|&i| d.push(text, i).unwrap()).collect();
    let all = deltas.concat() + &d.finish(text).unwrap();
    (deltas, all)
}

fn byte(text: &TextProcessor, b: u8) -> u32 {
    text.token_to_id(&format!("<0x{b:02X}>")).unwrap()
}

#[test]
fn text_with_byte_fallback_streams_whole_characters() {
    let text = sentencepiece();
    assert!(text.is_fallback_byte(byte(&text, 0xE6)));
    for s in [
        "Le patient présente une fièvre à 39°C — 患者は発熱と咳 🩺. Diagnostic?",
        "🩺🩺 x-ray: no effusion",
        "Ünïcödé",
    ] {
        let ids = text.encode(s).unwrap();
        assert!(
            ids.iter().any(|&i| text.is_fallback_byte(i)),
            "{s:?} should need byte fallback"
        );
        let (deltas, all) = stream(&text, &ids);
        assert_eq!(all, s);
        assert_eq!(all, text.decode(&ids, true).unwrap());
        for d in deltas {
            assert!(!d.contains('\u{FFFD}'), "partial character emitted: {d:?}");
        }
    }
}

#[test]
fn an_invalid_byte_run_decodes_as_tokenizers_decodes_it_and_nothing_is_dropped() {
    let text = sentencepiece();
    let p = byte(&text, b'p');
    let cont = byte(&text, 0xB0);
    let word = text.encode(" patient").unwrap();
    // A run with a stray continuation byte: tokenizers turns every byte of the run
    // into U+FFFD, the valid ones before it too.
    let mut ids = vec![p, p, cont, byte(&text, b'R'), byte(&text, b'R')];
    let (_, all) = stream(&text, &ids);
    assert_eq!(all, "\u{FFFD}".repeat(5));
    assert_eq!(all, text.decode(&ids, true).unwrap());
    // The same run ended by a word, then a valid run.
    ids.extend(&word);
    ids.extend([byte(&text, 0xC3), byte(&text, 0xA9)]);
    let (_, all) = stream(&text, &ids);
    assert_eq!(all, text.decode(&ids, true).unwrap());
    assert!(all.ends_with(" patienté"), "{all:?}");
}

#[test]
fn random_streams_concatenate_to_the_whole_decode() {
    let text = sentencepiece();
    let vocab = text.tokenizer().get_vocab_size(true) as u32;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        let len = 1 + (next() % 40) as usize;
        let ids: Vec<u32> = (0..len)
            .map(|_| match next() % 3 {
                // Bytes often, valid UTF-8 leads and continuations among them.
                0 => byte(
                    &text,
                    [0x41, 0xC3, 0xA9, 0xE6, 0x82, 0xA3, 0xF0, 0x9F, 0xB0][(next() % 9) as usize],
                ),
                _ => (next() % u64::from(vocab)) as u32,
            })
            .collect();
        let (_, all) = stream(&text, &ids);
        assert_eq!(all, text.decode(&ids, true).unwrap(), "{ids:?}");
    }
}
