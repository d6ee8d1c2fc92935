//! SHA-256 for the `unique_hash` of metered events (`metering._sha256`), and
//! the unique hash as the core holds it: 32 bytes, not 64 hex characters.
//!
//! The digest comes from the `sha2` crate (RustCrypto), which picks the
//! CPU's SHA extensions at run time (4-5x the hand-written version this
//! replaced, measured on 60-byte inputs); the standard vectors below and the
//! differential tests against `hashlib` pin it.

use sha2::{Digest, Sha256};

/// The digest of `data`.
pub fn digest(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The digest of the parts joined by U+001F (no joined copy is made).
pub fn digest_of_parts(parts: &[&str]) -> [u8; 32] {
    let joined = parts.iter().map(|part| part.len()).sum::<usize>() + parts.len().max(1) - 1;
    if joined <= ONE_BLOCK {
        return one_block_digest(parts, joined);
    }
    streamed_digest_of_parts(parts)
}

/// The longest message SHA-256 pads into one 64-byte block.
const ONE_BLOCK: usize = 55;

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// `digest_of_parts` of parts whose joined text (`joined` bytes) fits one
/// block: the block padded here (FIPS 180-4, 5.1.1) and compressed once, the
/// hasher's buffering skipped (most event hashes: tenant, environment, id).
fn one_block_digest(parts: &[&str], joined: usize) -> [u8; 32] {
    let mut block = [0u8; 64];
    let mut at = 0;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            block[at] = 0x1f;
            at += 1;
        }
        block[at..at + part.len()].copy_from_slice(part.as_bytes());
        at += part.len();
    }
    block[at] = 0x80;
    block[56..].copy_from_slice(&(joined as u64 * 8).to_be_bytes());
    let mut state = INITIAL_STATE;
    sha2::compress256(&mut state, &[block.into()]);
    let mut digest = [0u8; 32];
    for (bytes, word) in digest.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// `digest_of_parts` through the hasher (any length).
fn streamed_digest_of_parts(parts: &[&str]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update([0x1f]);
        }
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// `hashlib.sha256("\x1f".join(parts).encode()).hexdigest()`.
pub fn hex_of_parts(parts: &[&str]) -> String {
    UniqueHash::Digest(digest_of_parts(parts)).to_string()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A unique hash as the reference compares it (a string), held without an
/// allocation when it is what `hexdigest()` writes: 64 lowercase hex digits
/// become their 32 bytes. Any other text (a test's `"h1"`, a foreign row) is
/// kept as text. The mapping is one to one, so two hashes are equal exactly
/// when their strings are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UniqueHash {
    Digest([u8; 32]),
    Text(Box<str>),
}

impl std::hash::Hash for UniqueHash {
    /// A digest feeds only its first 8 bytes to the (keyed) hasher: they are
    /// as random as the rest, and equality still compares all 32.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            UniqueHash::Digest(bytes) => {
                state.write_u64(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")))
            }
            UniqueHash::Text(text) => text.hash(state),
        }
    }
}

impl UniqueHash {
    /// The hash a string stands for.
    pub fn parse(text: &str) -> UniqueHash {
        let bytes = text.as_bytes();
        let nibble = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        if bytes.len() == 64 {
            let mut out = [0u8; 32];
            let all = out
                .iter_mut()
                .zip(bytes.chunks_exact(2))
                .all(|(slot, pair)| match (nibble(pair[0]), nibble(pair[1])) {
                    (Some(high), Some(low)) => {
                        *slot = high << 4 | low;
                        true
                    }
                    _ => false,
                });
            if all {
                return UniqueHash::Digest(out);
            }
        }
        UniqueHash::Text(text.into())
    }

    /// `engine.fingerprint`: the first 16 hex digits as a number (0 if not hex).
    pub fn fingerprint(&self) -> u64 {
        match self {
            UniqueHash::Digest(bytes) => {
                u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
            }
            UniqueHash::Text(text) => text
                .get(..16)
                .and_then(|head| u64::from_str_radix(head, 16).ok())
                .unwrap_or(0),
        }
    }

    /// The UTF-8 bytes of the string this hash stands for, given to
    /// `use_text`: a digest's 64 hex digits are made on the stack.
    pub fn with_text<T>(&self, use_text: impl FnOnce(&[u8]) -> T) -> T {
        match self {
            UniqueHash::Digest(bytes) => {
                let mut hex = [0u8; 64];
                for (pair, byte) in hex.chunks_exact_mut(2).zip(bytes) {
                    pair[0] = HEX[usize::from(byte >> 4)];
                    pair[1] = HEX[usize::from(byte & 15)];
                }
                use_text(&hex)
            }
            UniqueHash::Text(text) => use_text(text.as_bytes()),
        }
    }

    /// Append the string this hash stands for.
    pub fn write_to(&self, out: &mut String) {
        self.with_text(|text| out.push_str(std::str::from_utf8(text).expect("a hash's text")));
    }
}

impl std::fmt::Display for UniqueHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        self.write_to(&mut text);
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_vectors() {
        assert_eq!(
            hex_of_parts(&[""]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex_of_parts(&["abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex_of_parts(&["abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"]),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn hex_hashes_are_held_as_bytes_and_read_back_the_same() {
        let hex = hex_of_parts(&["t", "e", "id"]);
        let held = UniqueHash::parse(&hex);
        assert!(matches!(held, UniqueHash::Digest(_)));
        assert_eq!(held.to_string(), hex);
        assert_eq!(
            held.fingerprint(),
            u64::from_str_radix(&hex[..16], 16).unwrap()
        );
        // Not what hexdigest writes: kept as text, compared as text.
        for text in ["h1", &hex.to_uppercase(), &hex[..63], "00000000000000ffzz"] {
            let held = UniqueHash::parse(text);
            assert!(matches!(held, UniqueHash::Text(_)), "{text}");
            assert_eq!(held.to_string(), text);
        }
        assert_eq!(UniqueHash::parse("00000000000000ffzz").fingerprint(), 255);
        assert_eq!(UniqueHash::parse("short").fingerprint(), 0);
    }

    #[test]
    fn one_block_digests_are_the_streamed_ones() {
        // Every joined length up to past the one-block limit, in one to three parts.
        let text = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-+_";
        for len in 0..=64 {
            let whole = &text[..len];
            let (a, b) = whole.split_at(len / 3);
            let (b, c) = b.split_at(b.len() / 2);
            for parts in [vec![whole], vec![a, b], vec![a, b, c]] {
                assert_eq!(
                    digest_of_parts(&parts),
                    streamed_digest_of_parts(&parts),
                    "{parts:?}"
                );
            }
        }
        assert_eq!(digest_of_parts(&[]), digest(b""));
    }

    #[test]
    fn parts_are_joined_by_the_unit_separator() {
        assert_eq!(hex_of_parts(&["a", "bc"]), hex_of_parts(&["a\u{1f}bc"]));
        assert_ne!(hex_of_parts(&["a", "bc"]), hex_of_parts(&["ab", "c"]));
    }
}
