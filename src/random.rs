//! Random text for protocol values: PKCE verifiers, `state`, `nonce`, client
//! assertion ids, lock owners.

use base64::Engine as _;

/// URL-safe text of `bytes` random bytes from the operating system's generator.
#[must_use]
pub fn random_text(bytes: usize) -> String {
    use rand::RngCore as _;
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod example {
    /// What the module does, in a few lines.
    #[test]
    fn module_example() {
        let state = crate::random::random_text(32);
        assert_eq!(state.len(), 43); // 32 bytes, base64url without padding
    }
}
