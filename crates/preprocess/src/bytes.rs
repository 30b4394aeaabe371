//! The byte-level (GPT-2) alphabet: every byte maps to one printable character.

/// The character the byte-level alphabet uses for byte `b`.
fn byte_char(b: u8) -> char {
    let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable {
        return b as char;
    }
    // Non-printable bytes take the code points from 256 on, in byte order.
    let rank = (0..b)
        .filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF))
        .count() as u32;
    char::from_u32(256 + rank).unwrap_or('\u{FFFD}')
}

/// The bytes of a piece written in the byte-level alphabet, or `None` when a
/// character is outside it.
pub fn byte_level_bytes(piece: &str) -> Option<Vec<u8>> {
    piece
        .chars()
        .map(|c| (0u8..=255).find(|&b| byte_char(b) == c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_alphabet() {
        assert_eq!(byte_char(b'a'), 'a');
        assert_eq!(byte_char(b' '), '\u{120}');
        assert_eq!(byte_char(b'\n'), '\u{10A}');
        assert_eq!(byte_level_bytes("\u{120}hi"), Some(b" hi".to_vec()));
        assert_eq!(byte_level_bytes("ðŁ"), Some(vec![0xF0, 0x9F]));
    }
}
