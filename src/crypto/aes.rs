//! AES in CTR mode as Tahoe uses it (`allmydata/crypto/aes.py`): a 128-bit big-endian counter that starts at an
//! all-zero block unless an explicit IV is given, with 16- or 32-byte keys. CTR is its own inverse, so one type
//! both encrypts and decrypts, and it can seek to any byte for random-access reads.

use aws_lc_rs::cipher::{AES_128, AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::iv::FixedLength;
use thiserror::Error;

/// Tahoe's default IV: sixteen zero bytes.
pub const DEFAULT_IV: [u8; 16] = [0; 16];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("AES key must be 16 or 32 bytes, got {0}")]
pub struct BadKeyLength(pub usize);

/// An AES-CTR keystream positioned at some byte offset.
///
/// The AES is aws-lc's (already here for TLS): several times the speed of the RustCrypto `ctr` crate on the same
/// machine, and every byte of a download and an upload goes through it.
pub struct AesCtr {
    key: EncryptingKey,
    /// The counter block of byte 0, as a number.
    iv: u128,
    /// Bytes of keystream used so far.
    position: u64,
}

impl AesCtr {
    /// A keystream for `key` starting at counter block `iv` (Tahoe's default is [`DEFAULT_IV`]).
    pub fn new(key: &[u8], iv: &[u8; 16]) -> Result<Self, BadKeyLength> {
        let algorithm = match key.len() {
            16 => &AES_128,
            32 => &AES_256,
            n => return Err(BadKeyLength(n)),
        };
        let key = UnboundCipherKey::new(algorithm, key)
            .and_then(EncryptingKey::ctr)
            .map_err(|_| BadKeyLength(key.len()))?;
        Ok(Self {
            key,
            iv: u128::from_be_bytes(*iv),
            position: 0,
        })
    }

    /// A keystream with a 128-bit key and Tahoe's default IV, as immutable files and mutable segments use.
    pub fn new_128(key: &[u8; 16]) -> Self {
        Self::new(key, &DEFAULT_IV).expect("a 16-byte key is an AES-128 key")
    }

    /// XORs the keystream into `buf` in place (encrypts or decrypts) and advances the position.
    pub fn apply(&mut self, buf: &mut [u8]) {
        let mut rest = buf;
        let skip = (self.position % 16) as usize;
        if skip != 0 && !rest.is_empty() {
            // Mid-block: the rest of this block's keystream, from a block of zeros.
            let mut keystream = [0u8; 16];
            self.encrypt_at_block(&mut keystream, self.position / 16);
            let take = rest.len().min(16 - skip);
            for (byte, key) in rest[..take].iter_mut().zip(&keystream[skip..]) {
                *byte ^= key;
            }
            self.position += take as u64;
            rest = &mut rest[take..];
        }
        if !rest.is_empty() {
            self.encrypt_at_block(rest, self.position / 16);
            self.position += rest.len() as u64;
        }
    }

    /// Moves to byte `offset` of the keystream, so a range of a file can be decrypted without the bytes before it.
    pub fn seek(&mut self, offset: u64) {
        self.position = offset;
    }

    /// Applies the keystream that starts at counter block `block` (counted from the IV) to `data`.
    fn encrypt_at_block(&self, data: &mut [u8], block: u64) {
        // The counter is the whole 128-bit block, big-endian, wrapping as Tahoe's (`cryptography`'s) does.
        let counter = self.iv.wrapping_add(u128::from(block)).to_be_bytes();
        let context = EncryptionContext::Iv128(FixedLength::from(counter));
        // CTR takes any length and this context; aws-lc fails only on a wrong context kind.
        self.key
            .less_safe_encrypt(data, context)
            .expect("AES-CTR with a 128-bit counter block");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeking_matches_streaming() {
        let key = [9u8; 16];
        let mut whole = vec![0u8; 1000];
        AesCtr::new_128(&key).apply(&mut whole);
        let mut part = vec![0u8; 300];
        let mut ctr = AesCtr::new_128(&key);
        ctr.seek(517);
        ctr.apply(&mut part);
        assert_eq!(part, whole[517..817]);
    }

    #[test]
    fn rejects_bad_key_lengths() {
        assert_eq!(
            AesCtr::new(&[0; 24], &DEFAULT_IV).err(),
            Some(BadKeyLength(24))
        );
    }
}
