//! TLS 1.3's record layer (RFC 8446 § 5) for an established connection,
//! kept as small as the protocol allows: per direction the traffic secret
//! (for a KeyUpdate), the AEAD key and IV derived from it, and the record
//! sequence number — about 100 bytes, where a rustls connection holds
//! kilobytes. The AEAD's expanded key schedule exists only while a batch
//! of records is sealed or opened.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;

/// Record content types (RFC 8446 § 5.1).
pub const ALERT: u8 = 21;
pub const HANDSHAKE: u8 = 22;
pub const APPLICATION_DATA: u8 = 23;

/// The largest plaintext one record carries.
pub const MAX_PLAINTEXT: usize = 1 << 14;
/// The largest ciphertext a record may carry (RFC 8446 § 5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const HEADER: usize = 5;
const TAG: usize = 16;
const IV: usize = 12;

/// The TLS 1.3 cipher suites (the AEAD and the hash of the key schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    Aes128GcmSha256,
    Aes256GcmSha384,
    Chacha20Poly1305Sha256,
}

impl Suite {
    pub fn from_rustls(suite: rustls::CipherSuite) -> Option<Suite> {
        match suite {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => Some(Suite::Aes128GcmSha256),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => Some(Suite::Aes256GcmSha384),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => {
                Some(Suite::Chacha20Poly1305Sha256)
            }
            _ => None,
        }
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128GcmSha256 => &aead::AES_128_GCM,
            Suite::Aes256GcmSha384 => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305Sha256 => &aead::CHACHA20_POLY1305,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes256GcmSha384 => hkdf::HKDF_SHA384,
            _ => hkdf::HKDF_SHA256,
        }
    }

    fn hash_len(self) -> usize {
        self.hkdf().hmac_algorithm().digest_algorithm().output_len()
    }
}

/// One direction of an established connection.
pub struct Direction {
    suite: Suite,
    secret: [u8; 48],
    key: [u8; 32],
    iv: [u8; IV],
    /// The next record's sequence number.
    pub seq: u64,
}

/// Why a received record could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not a TLS 1.3 application-data record, or too long.
    Malformed,
    /// The AEAD refused it: corrupt, forged, or out of sequence.
    Decrypt,
}

impl Direction {
    /// The direction whose traffic secret is `secret`, at sequence `seq`.
    pub fn new(suite: Suite, secret: &[u8], seq: u64) -> Direction {
        let mut direction = Direction {
            suite,
            secret: [0; 48],
            key: [0; 32],
            iv: [0; IV],
            seq,
        };
        direction.secret[..secret.len()].copy_from_slice(secret);
        direction.derive_keys();
        direction
    }

    fn secret(&self) -> &[u8] {
        &self.secret[..self.suite.hash_len()]
    }

    /// The key and IV of the current secret (RFC 8446 § 7.3).
    fn derive_keys(&mut self) {
        let key_len = self.suite.aead().key_len();
        let secret = self.secret;
        let secret = &secret[..self.suite.hash_len()];
        expand_label(self.suite, secret, b"key", &mut self.key[..key_len]);
        expand_label(self.suite, secret, b"iv", &mut self.iv);
    }

    /// The key and IV, for comparing with what rustls derived.
    pub fn key_and_iv(&self) -> (&[u8], &[u8]) {
        (&self.key[..self.suite.aead().key_len()], &self.iv)
    }

    /// Move to the next traffic secret (a KeyUpdate, RFC 8446 § 7.2).
    pub fn update(&mut self) {
        let mut next = [0u8; 48];
        let len = self.suite.hash_len();
        expand_label(self.suite, self.secret(), b"traffic upd", &mut next[..len]);
        self.secret = next;
        self.derive_keys();
        self.seq = 0;
    }

    fn aead_key(&self) -> LessSafeKey {
        let key = &self.key[..self.suite.aead().key_len()];
        LessSafeKey::new(
            UnboundKey::new(self.suite.aead(), key).expect("key of the suite's length"),
        )
    }

    fn nonce(&mut self) -> Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[IV - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        Nonce::assume_unique_for_key(nonce)
    }

    /// Append to `out` the records that carry `parts` (concatenated) as
    /// `content_type`, at most [`MAX_PLAINTEXT`] bytes each.
    pub fn seal<T: AsRef<[u8]>>(&mut self, content_type: u8, parts: &[T], out: &mut Vec<u8>) {
        let key = self.aead_key();
        let total: usize = parts.iter().map(|p| p.as_ref().len()).sum();
        let records = total.div_ceil(MAX_PLAINTEXT).max(1);
        out.reserve(total + records * (HEADER + 1 + TAG));
        let (mut part, mut offset, mut left) = (0, 0, total);
        loop {
            let start = out.len();
            out.extend_from_slice(&[APPLICATION_DATA, 3, 3, 0, 0]);
            let mut room = MAX_PLAINTEXT.min(left);
            left -= room;
            while room > 0 {
                let bytes = parts[part].as_ref();
                let take = (bytes.len() - offset).min(room);
                out.extend_from_slice(&bytes[offset..offset + take]);
                (offset, room) = (offset + take, room - take);
                if offset == bytes.len() {
                    (part, offset) = (part + 1, 0);
                }
            }
            self.seal_one(&key, content_type, start, out);
            if left == 0 {
                break;
            }
        }
    }

    /// Seal the record whose header is at `out[start..]` and whose
    /// plaintext follows it to the end of `out`.
    fn seal_one(&mut self, key: &LessSafeKey, content_type: u8, start: usize, out: &mut Vec<u8>) {
        out.push(content_type);
        let length = (out.len() - start - HEADER + TAG) as u16;
        out[start + 3..start + HEADER].copy_from_slice(&length.to_be_bytes());
        let header: [u8; HEADER] = out[start..start + HEADER].try_into().expect("5 bytes");
        let nonce = self.nonce();
        let tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut out[start + HEADER..])
            .expect("a record within the AEAD's limits");
        out.extend_from_slice(tag.as_ref());
    }

    /// Open the record at the front of `data` in place. `None`: the record
    /// is not whole yet. Otherwise its length on the wire, its content type
    /// and where its plaintext is in `data`. `key` caches the expanded key
    /// across the records of one read (clear it after [`Direction::update`]).
    pub fn open(
        &mut self,
        key: &mut Option<LessSafeKey>,
        data: &mut [u8],
    ) -> Result<Option<Opened>, OpenError> {
        if data.len() < HEADER {
            return Ok(None);
        }
        let header: [u8; HEADER] = data[..HEADER].try_into().expect("5 bytes");
        let length = u16::from_be_bytes([header[3], header[4]]) as usize;
        if header[0] != APPLICATION_DATA
            || header[1] != 3
            || !(TAG + 1..=MAX_CIPHERTEXT).contains(&length)
        {
            return Err(OpenError::Malformed);
        }
        if data.len() < HEADER + length {
            return Ok(None);
        }
        let key = key.get_or_insert_with(|| self.aead_key());
        let nonce = self.nonce();
        let inner = key
            .open_in_place(nonce, Aad::from(header), &mut data[HEADER..HEADER + length])
            .map_err(|_| OpenError::Decrypt)?;
        // The content type is the last byte that is not zero padding.
        let end = inner
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(OpenError::Malformed)?;
        Ok(Some(Opened {
            wire_len: HEADER + length,
            content_type: inner[end],
            plaintext: HEADER..HEADER + end,
        }))
    }
}

/// One record [`Direction::open`] opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub wire_len: usize,
    pub content_type: u8,
    pub plaintext: std::ops::Range<usize>,
}

/// HKDF-Expand-Label(secret, label, "", out.len()) (RFC 8446 § 7.1).
fn expand_label(suite: Suite, secret: &[u8], label: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    hkdf::Prk::new_less_safe(suite.hkdf(), secret)
        .expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("a label within HKDF's limits");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(suite: Suite) -> (Direction, Direction) {
        let secret = [7u8; 48];
        let len = suite.hash_len();
        (
            Direction::new(suite, &secret[..len], 0),
            Direction::new(suite, &secret[..len], 0),
        )
    }

    fn open_all(receiver: &mut Direction, mut wire: &mut [u8]) -> Vec<(u8, Vec<u8>)> {
        let (mut got, mut key) = (Vec::new(), None);
        while let Some(opened) = receiver.open(&mut key, wire).unwrap() {
            got.push((opened.content_type, wire[opened.plaintext].to_vec()));
            wire = &mut wire[opened.wire_len..];
        }
        assert!(wire.is_empty());
        got
    }

    #[test]
    fn what_one_side_seals_the_other_opens_in_every_suite_and_across_record_edges() {
        for suite in [
            Suite::Aes128GcmSha256,
            Suite::Aes256GcmSha384,
            Suite::Chacha20Poly1305Sha256,
        ] {
            let (mut sender, mut receiver) = pair(suite);
            let big = vec![9u8; MAX_PLAINTEXT + 100];
            let mut wire = Vec::new();
            sender.seal(APPLICATION_DATA, &[&b"ab"[..], &big, b"c"], &mut wire);
            sender.seal(ALERT, &[[1u8, 0]], &mut wire);
            let got = open_all(&mut receiver, &mut wire);
            let data: Vec<u8> = got
                .iter()
                .filter(|(k, _)| *k == APPLICATION_DATA)
                .flat_map(|(_, b)| b.clone())
                .collect();
            assert_eq!(data.len(), 2 + big.len() + 1);
            assert_eq!((&data[..2], data[data.len() - 1]), (&b"ab"[..], b'c'));
            assert_eq!(got.len(), 3, "two records of data, then the alert");
            assert_eq!(got[2], (ALERT, vec![1, 0]));
        }
    }

    #[test]
    fn a_flipped_bit_fails_to_decrypt_and_a_partial_record_waits() {
        let (mut sender, mut receiver) = pair(Suite::Aes128GcmSha256);
        let mut wire = Vec::new();
        sender.seal(APPLICATION_DATA, &[b"hello"], &mut wire);
        let partial = receiver.open(&mut None, &mut wire.clone()[..wire.len() - 1]);
        assert_eq!(partial, Ok(None));
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert_eq!(receiver.open(&mut None, &mut wire), Err(OpenError::Decrypt));
    }

    #[test]
    fn both_sides_agree_after_a_key_update() {
        let (mut sender, mut receiver) = pair(Suite::Aes256GcmSha384);
        sender.update();
        receiver.update();
        let mut wire = Vec::new();
        sender.seal(APPLICATION_DATA, &[b"after"], &mut wire);
        assert_eq!(
            open_all(&mut receiver, &mut wire),
            [(APPLICATION_DATA, b"after".to_vec())]
        );
    }

    /// RFC 8448 § 3 (a simple 1-RTT handshake): the server's application
    /// traffic secret and the key and IV derived from it.
    #[test]
    fn keys_match_rfc_8448() {
        let secret = hex("a11af9f05531f856ad47116b45a950328204b4f44bfb6b3a4b4f1f3fcb631643");
        let direction = Direction::new(Suite::Aes128GcmSha256, &secret, 0);
        let (key, iv) = direction.key_and_iv();
        assert_eq!(key, hex("9f02283b6c9c07efc26bb9f2ac92e356"));
        assert_eq!(iv, hex("cf782b88dd83549aadf1e984"));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }
}
