//! Sealing: authenticated encryption of cookie values with a key ring.
//!
//! A sealed value is `base64url(version ‖ key id ‖ nonce ‖ ciphertext ‖ tag)`:
//!
//! | bytes | what |
//! |---|---|
//! | 1 | format version ([`FORMAT_VERSION`]) |
//! | 4 | key id: the key check value of the sealing key (AES of a zero block) |
//! | 12 | random 96-bit nonce, fresh for every seal |
//! | n + 16 | AES-256-GCM ciphertext and tag |
//!
//! The associated data is the 5-byte header followed by the cookie name, so a value
//! sealed for one cookie does not open as another, and neither the version nor the
//! key id can be changed without the tag failing.
//!
//! The [`KeyRing`] seals with its first key and opens with any of them: putting a new
//! key first rotates keys without logging anyone out.
//!
//! ```
//! use bff_proxy::seal::KeyRing;
//!
//! let ring = KeyRing::new(vec![KeyRing::generate_key()]).unwrap();
//! let sealed = ring.seal("__Host-Http-bff", b"hello");
//! assert_eq!(ring.open("__Host-Http-bff", &sealed).unwrap(), b"hello");
//! assert!(ring.open("other-cookie", &sealed).is_err());
//! ```

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// The format version written in front of every sealed value.
pub const FORMAT_VERSION: u8 = 1;
/// Length of a key in bytes (AES-256).
pub const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN;
/// Bytes a seal adds to the plaintext before base64 (header, nonce, tag).
pub const SEAL_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
/// The longest sealed text [`KeyRing::open`] looks at; longer input is refused before
/// any decoding.
pub const MAX_SEALED_LEN: usize = 48 * 1024;
/// The fewest distinct byte values a key must have. A random 32-byte key has about 30;
/// fewer than this means a pattern ("abab…", a repeated passphrase), not a random key.
const MIN_DISTINCT_KEY_BYTES: usize = 16;

/// Why a sealed value did not open. Deliberately coarse: callers treat every case
/// as "no session", and the reason is for logs and tests only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Longer than [`MAX_SEALED_LEN`].
    #[error("sealed value too long")]
    TooLong,
    /// Not base64url.
    #[error("sealed value is not base64url")]
    Encoding,
    /// Shorter than a header, nonce and tag.
    #[error("sealed value truncated")]
    Truncated,
    /// A format version this build does not read.
    #[error("unknown sealed format version")]
    Version,
    /// No key in the ring has the value's key id.
    #[error("sealed with a key that is not in the ring")]
    UnknownKey,
    /// The tag did not verify: tampered, wrong cookie name, or truncated.
    #[error("sealed value failed authentication")]
    Authentication,
}

/// Why a configured key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Not base64 (standard or URL-safe, padded or not).
    #[error("must be base64 (generate one with `bff-proxy keygen`)")]
    NotBase64,
    /// Decoded to the wrong number of bytes.
    #[error("must decode to 32 bytes of base64, got {0}")]
    WrongLength(usize),
    /// Every byte is zero.
    #[error("is all zero bytes: generate a random key with `bff-proxy keygen`")]
    AllZero,
    /// Too few distinct bytes to be random.
    #[error(
        "looks weak ({0} distinct byte values; a random key has about 30): generate one with `bff-proxy keygen`"
    )]
    LowVariety(usize),
}

/// Which AES-256-GCM implementation seals and opens. Both produce the same bytes
/// (it is one standard algorithm), so the choice is about speed only: `ring`'s
/// assembly is about four times faster than `aes-gcm`'s (see `cargo bench --bench
/// session`), so it is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AeadBackend {
    /// `ring` (already in the tree through rustls).
    #[default]
    Ring,
    /// RustCrypto's `aes-gcm` (pure Rust with AES-NI and CLMUL detection).
    AesGcm,
}

/// The AES-256-GCM backends, kept behind this one seam so the choice is made on
/// measurement.
mod backend {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::aes::Aes256;
    use aes_gcm::aes::cipher::{BlockEncrypt, generic_array::GenericArray};
    use aes_gcm::{Aes256Gcm, Nonce, Tag};
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, UnboundKey};

    use super::{AeadBackend, KEY_ID_LEN, KEY_LEN, NONCE_LEN, TAG_LEN};

    #[derive(Clone)]
    pub(super) enum Cipher {
        Ring(Box<LessSafeKey>),
        AesGcm(Box<Aes256Gcm>),
    }

    impl Cipher {
        pub(super) fn new(key: &[u8; KEY_LEN], backend: AeadBackend) -> Self {
            match backend {
                AeadBackend::Ring => match UnboundKey::new(&AES_256_GCM, key) {
                    Ok(k) => Self::Ring(Box::new(LessSafeKey::new(k))),
                    // ring refuses only keys of the wrong length; ours are 32 bytes.
                    Err(_) => Self::AesGcm(Box::new(Aes256Gcm::new(GenericArray::from_slice(key)))),
                },
                AeadBackend::AesGcm => {
                    Self::AesGcm(Box::new(Aes256Gcm::new(GenericArray::from_slice(key))))
                }
            }
        }

        /// The key check value: the first bytes of AES-256 of a zero block. It names
        /// the key without revealing anything usable about it.
        pub(super) fn key_id(key: &[u8; KEY_LEN]) -> [u8; KEY_ID_LEN] {
            let aes = Aes256::new(GenericArray::from_slice(key));
            let mut block = GenericArray::from([0u8; 16]);
            aes.encrypt_block(&mut block);
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(&block[..KEY_ID_LEN]);
            id
        }

        /// Encrypts `buf` in place and returns the tag.
        pub(super) fn seal(
            &self,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            buf: &mut [u8],
        ) -> [u8; TAG_LEN] {
            // Encryption with a 96-bit nonce fails only past GCM's 64 GiB limit; our
            // inputs are bounded far below that.
            match self {
                Self::Ring(key) => key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        buf,
                    )
                    .ok()
                    .and_then(|tag| tag.as_ref().try_into().ok())
                    .unwrap_or([0u8; TAG_LEN]),
                Self::AesGcm(c) => c
                    .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
                    .map(Into::into)
                    .unwrap_or([0u8; TAG_LEN]),
            }
        }

        /// Decrypts `ct_and_tag` (ciphertext then tag) in place; the plaintext length
        /// on success, None if the tag does not verify.
        pub(super) fn open(
            &self,
            nonce: &[u8; NONCE_LEN],
            aad: &[u8],
            ct_and_tag: &mut [u8],
        ) -> Option<usize> {
            let ct_len = ct_and_tag.len().checked_sub(TAG_LEN)?;
            match self {
                Self::Ring(key) => key
                    .open_in_place(
                        ring::aead::Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        ct_and_tag,
                    )
                    .ok()
                    .map(|plain| plain.len()),
                Self::AesGcm(c) => {
                    let (ct, tag) = ct_and_tag.split_at_mut(ct_len);
                    c.decrypt_in_place_detached(
                        Nonce::from_slice(nonce),
                        aad,
                        ct,
                        Tag::from_slice(tag),
                    )
                    .ok()
                    .map(|()| ct_len)
                }
            }
        }
    }
}

#[derive(Clone)]
struct SealKey {
    id: [u8; KEY_ID_LEN],
    cipher: backend::Cipher,
}

/// The session keys: the first one seals, all of them open.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<SealKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds a ring from raw keys, first key sealing, with the default backend.
    /// Refuses an empty list and weak keys; a key listed twice is kept once.
    pub fn new(keys: Vec<[u8; KEY_LEN]>) -> Result<Self, KeyError> {
        Self::with_backend(keys, AeadBackend::default())
    }

    /// Like [`KeyRing::new`] with a chosen AES-GCM implementation.
    pub fn with_backend(keys: Vec<[u8; KEY_LEN]>, backend: AeadBackend) -> Result<Self, KeyError> {
        let mut ring = Vec::with_capacity(keys.len());
        for key in &keys {
            check_key_strength(key)?;
            let id = backend::Cipher::key_id(key);
            if ring.iter().any(|k: &SealKey| k.id == id) {
                continue;
            }
            ring.push(SealKey {
                id,
                cipher: backend::Cipher::new(key, backend),
            });
        }
        if ring.is_empty() {
            return Err(KeyError::WrongLength(0));
        }
        Ok(Self { keys: ring })
    }

    /// Decodes and checks one configured key (base64, standard or URL-safe, padded or
    /// not; surrounding white space ignored).
    pub fn parse_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
        let text = text.trim();
        let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(KeyError::NotBase64)?;
        let key: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        check_key_strength(&key)?;
        Ok(key)
    }

    /// A fresh random key, as `bff-proxy keygen` prints it (standard base64).
    #[must_use]
    pub fn generate_key_base64() -> String {
        STANDARD.encode(Self::generate_key())
    }

    /// A fresh random key from the operating system's generator.
    #[must_use]
    pub fn generate_key() -> [u8; KEY_LEN] {
        use rand::RngCore as _;
        loop {
            let mut key = [0u8; KEY_LEN];
            rand::rngs::OsRng.fill_bytes(&mut key);
            // Astronomically unlikely to loop; it keeps keygen's output acceptable
            // to our own strength check by construction.
            if check_key_strength(&key).is_ok() {
                return key;
            }
        }
    }

    /// How many keys the ring holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Always false: a ring has at least one key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The length of the sealed text for a plaintext of `len` bytes.
    #[must_use]
    pub const fn sealed_len(len: usize) -> usize {
        (len + SEAL_OVERHEAD).div_ceil(3) * 4 - padding_chars(len + SEAL_OVERHEAD)
    }

    /// Seals `plaintext` for the cookie `name` with the first key.
    #[must_use]
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        use rand::RngCore as _;
        let key = &self.keys[0];
        let mut buf = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        buf.push(FORMAT_VERSION);
        buf.extend_from_slice(&key.id);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let (head, body) = buf.split_at_mut(HEADER_LEN + NONCE_LEN);
        let aad = aad(&head[..HEADER_LEN], name);
        let tag = key.cipher.seal(&nonce, &aad, body);
        buf.extend_from_slice(&tag);
        base64_simd::URL_SAFE_NO_PAD.encode_to_string(&buf)
    }

    /// Opens a value sealed for the cookie `name` by any key of the ring.
    pub fn open(&self, name: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        self.open_map(name, sealed, <[u8]>::to_vec)
    }

    /// Opens a sealed value and hands the plaintext to `f` without copying it out of
    /// the decryption buffer (the hot path decodes the session straight from it).
    pub fn open_map<T>(
        &self,
        name: &str,
        sealed: impl AsRef<[u8]>,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, OpenError> {
        let sealed = sealed.as_ref();
        if sealed.len() > MAX_SEALED_LEN {
            return Err(OpenError::TooLong);
        }
        // SIMD base64url (the hot path's biggest cost after the Cookie header):
        // strict like `base64`'s, so a value has one spelling (non-zero trailing
        // bits are refused).
        let mut buf = base64_simd::URL_SAFE_NO_PAD
            .decode_to_vec(sealed)
            .map_err(|_| OpenError::Encoding)?;
        if buf.len() < SEAL_OVERHEAD {
            return Err(OpenError::Truncated);
        }
        if buf[0] != FORMAT_VERSION {
            return Err(OpenError::Version);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[HEADER_LEN..HEADER_LEN + NONCE_LEN]);
        let aad = aad(&buf[..HEADER_LEN], name);
        let mut key_id = [0u8; KEY_ID_LEN];
        key_id.copy_from_slice(&buf[1..HEADER_LEN]);
        let mut candidates = self.keys.iter().filter(|k| k.id == key_id);
        let body_at = HEADER_LEN + NONCE_LEN;
        let Some(first) = candidates.next() else {
            return Err(OpenError::UnknownKey);
        };
        match candidates.next() {
            None => {
                let body = &mut buf[body_at..];
                match first.cipher.open(&nonce, &aad, body) {
                    Some(len) => Ok(f(&body[..len])),
                    None => Err(OpenError::Authentication),
                }
            }
            // Key ids are 32 bits, so two ring keys could in theory share one; each
            // candidate then gets its own copy of the ciphertext.
            Some(second) => {
                for key in [first, second].into_iter().chain(candidates) {
                    let mut body = buf[body_at..].to_vec();
                    if let Some(len) = key.cipher.open(&nonce, &aad, &mut body) {
                        return Ok(f(&body[..len]));
                    }
                }
                Err(OpenError::Authentication)
            }
        }
    }
}

const fn padding_chars(n: usize) -> usize {
    match n % 3 {
        1 => 2,
        2 => 1,
        _ => 0,
    }
}

/// The associated data: the header, then the cookie name. On the stack for names of
/// usual length (every request opens one).
fn aad(header: &[u8], name: &str) -> Aad {
    let len = header.len() + name.len();
    if len <= AAD_INLINE {
        let mut bytes = [0u8; AAD_INLINE];
        bytes[..header.len()].copy_from_slice(header);
        bytes[header.len()..len].copy_from_slice(name.as_bytes());
        Aad::Inline(bytes, len)
    } else {
        let mut aad = Vec::with_capacity(len);
        aad.extend_from_slice(header);
        aad.extend_from_slice(name.as_bytes());
        Aad::Heap(aad)
    }
}

const AAD_INLINE: usize = 96;

enum Aad {
    Inline([u8; AAD_INLINE], usize),
    Heap(Vec<u8>),
}

impl std::ops::Deref for Aad {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Inline(bytes, len) => &bytes[..*len],
            Self::Heap(bytes) => bytes,
        }
    }
}

fn check_key_strength(key: &[u8; KEY_LEN]) -> Result<(), KeyError> {
    if key.iter().all(|&b| b == 0) {
        return Err(KeyError::AllZero);
    }
    let mut seen = [false; 256];
    for &b in key {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    if distinct < MIN_DISTINCT_KEY_BYTES {
        return Err(KeyError::LowVariety(distinct));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
