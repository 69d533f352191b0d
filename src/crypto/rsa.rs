//! RSA-2048 signing keys of mutable files, as `allmydata/crypto/rsa.py` uses them: PSS with MGF1-SHA-256 and a
//! 32-byte salt over SHA-256, e = 65537, the private key as PKCS#8 DER and the public key as SubjectPublicKeyInfo
//! DER. Tahoe hashes those DER bytes into the caps (writekey, fingerprint), so a key read from a share keeps the
//! exact bytes it came in; a key we make is serialised once and those bytes are what we hash and store.

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::pss;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Verifier};
use rsa::traits::PublicKeyParts;
use sha2::Sha256;
use thiserror::Error;

/// The only key size Tahoe 1.20 accepts when loading a private key.
pub const KEY_BITS: usize = 2048;
/// Tahoe's `RSA_PSS_SALT_LENGTH`.
pub const PSS_SALT_LENGTH: usize = 32;
/// Longest DER we parse: a 2048-bit PKCS#8 key is about 1.2 KB; anything far bigger is not one of ours.
const MAX_DER_LEN: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RsaError {
    #[error("private key: {0}")]
    BadPrivateKey(String),
    #[error("public key: {0}")]
    BadPublicKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// A mutable file's private ("signature") key and the DER bytes it is known by.
#[derive(Clone)]
pub struct SigningKey {
    der: Vec<u8>,
    key: pss::SigningKey<Sha256>,
    public: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Makes a new 2048-bit key. Slow (tens to hundreds of milliseconds): call it off the async runtime's threads.
    pub fn generate() -> Result<SigningKey, RsaError> {
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, KEY_BITS)
            .map_err(|e| RsaError::Generate(e.to_string()))?;
        let der = private
            .to_pkcs8_der()
            .map_err(|e| RsaError::Generate(e.to_string()))?;
        SigningKey::from_pkcs8_der(der.as_bytes())
    }

    /// Loads a PKCS#8 DER private key, keeping `der` as the bytes the key is known by. Only 2048-bit keys are
    /// accepted, as Tahoe does.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, RsaError> {
        if der.len() > MAX_DER_LEN {
            return Err(RsaError::BadPrivateKey(format!(
                "{} bytes is too long for an RSA-2048 key",
                der.len()
            )));
        }
        let private = rsa::PrivateKey::from_pkcs8_der(der)
            .map_err(|e| RsaError::BadPrivateKey(e.to_string()))?;
        if private.n().bit_width() as usize != KEY_BITS {
            return Err(RsaError::BadPrivateKey(format!(
                "{} bits, Tahoe uses {KEY_BITS}",
                private.n().bit_width()
            )));
        }
        let public_der = private
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| RsaError::BadPrivateKey(e.to_string()))?;
        let public = VerifyingKey::from_spki_der(public_der.as_bytes())
            .map_err(|e| RsaError::BadPrivateKey(e.to_string()))?;
        Ok(SigningKey {
            der: der.to_vec(),
            key: pss::SigningKey::new_with_salt_len(private, PSS_SALT_LENGTH),
            public,
        })
    }

    /// The PKCS#8 DER bytes (secret: the writekey is their hash).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// A PSS signature of `message` (256 bytes).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, RsaError> {
        let signature = self
            .key
            .try_sign_with_rng(&mut getrandom::SysRng, message)
            .map_err(|e| RsaError::Sign(e.to_string()))?;
        Ok(signature.to_vec())
    }
}

/// A mutable file's public ("verification") key and its SPKI DER bytes.
#[derive(Clone)]
pub struct VerifyingKey {
    der: Vec<u8>,
    key: pss::VerifyingKey<Sha256>,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({} DER bytes)", self.der.len())
    }
}

impl VerifyingKey {
    pub fn from_spki_der(der: &[u8]) -> Result<VerifyingKey, RsaError> {
        if der.len() > MAX_DER_LEN {
            return Err(RsaError::BadPublicKey(format!(
                "{} bytes is too long for an RSA-2048 key",
                der.len()
            )));
        }
        let public = rsa::PublicKey::from_public_key_der(der)
            .map_err(|e| RsaError::BadPublicKey(e.to_string()))?;
        if public.n().bit_width() as usize != KEY_BITS {
            return Err(RsaError::BadPublicKey(format!(
                "{} bits, Tahoe uses {KEY_BITS}",
                public.n().bit_width()
            )));
        }
        Ok(VerifyingKey {
            der: der.to_vec(),
            key: pss::VerifyingKey::new_with_salt_len(public, PSS_SALT_LENGTH),
        })
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), RsaError> {
        let signature = pss::Signature::try_from(signature).map_err(|_| RsaError::BadSignature)?;
        self.key
            .verify(message, &signature)
            .map_err(|_| RsaError::BadSignature)
    }
}

/// New signing keys made ahead of need on a background thread, so that making a mutable file (a directory, above
/// all) need not wait for RSA-2048 key generation, which takes about a tenth of a second. The thread only refills
/// what was taken, up to a few keys, and ends when the last handle to the pool is dropped. Each key is handed out
/// once.
#[derive(Clone)]
pub struct KeyPool {
    shared: std::sync::Arc<PoolShared>,
}

struct PoolShared {
    keys: std::sync::Mutex<Vec<SigningKey>>,
    taken: std::sync::Condvar,
    size: usize,
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyPool(up to {} keys)", self.shared.size)
    }
}

impl KeyPool {
    /// A pool holding up to `size` keys, filled from now on by its own thread.
    pub fn new(size: usize) -> std::io::Result<KeyPool> {
        let shared = std::sync::Arc::new(PoolShared {
            keys: std::sync::Mutex::new(Vec::with_capacity(size)),
            taken: std::sync::Condvar::new(),
            size,
        });
        let weak = std::sync::Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("rsa-key-pool".into())
            .spawn(move || fill_pool(weak))?;
        Ok(KeyPool { shared })
    }

    /// A fresh key from the pool, if one is ready.
    pub fn take(&self) -> Option<SigningKey> {
        let key = lock_keys(&self.shared.keys).pop();
        self.shared.taken.notify_one();
        key
    }

    /// Keys ready now.
    pub fn ready(&self) -> usize {
        lock_keys(&self.shared.keys).len()
    }
}

fn lock_keys(
    keys: &std::sync::Mutex<Vec<SigningKey>>,
) -> std::sync::MutexGuard<'_, Vec<SigningKey>> {
    keys.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn fill_pool(weak: std::sync::Weak<PoolShared>) {
    loop {
        // Holds the pool only while waiting briefly, so that dropping the last handle ends this thread.
        {
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let keys = lock_keys(&shared.keys);
            if keys.len() >= shared.size {
                let _ = shared
                    .taken
                    .wait_timeout(keys, std::time::Duration::from_millis(500));
                continue;
            }
        }
        // A failure here (no randomness) is left to the caller's own attempt, which reports it.
        let Ok(key) = SigningKey::generate() else {
            std::thread::sleep(std::time::Duration::from_secs(1));
            continue;
        };
        let Some(shared) = weak.upgrade() else {
            return;
        };
        lock_keys(&shared.keys).push(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_pool_fills_up_and_hands_out_each_key_once() {
        let pool = KeyPool::new(2).unwrap();
        let wait_for = |keys: usize| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while pool.ready() < keys {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the pool never filled"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        };
        wait_for(2);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_ne!(a.der(), b.der());
        // It refills what was taken, with new keys.
        wait_for(1);
        let c = pool.take().unwrap();
        assert_ne!(c.der(), a.der());
        assert_ne!(c.der(), b.der());
    }

    #[test]
    fn a_generated_key_signs_and_its_der_round_trips() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8_der(key.der()).unwrap();
        assert_eq!(again.verifying_key().der(), key.verifying_key().der());
        let signature = key.sign(b"prefix").unwrap();
        assert_eq!(signature.len(), 256);
        again.verifying_key().verify(b"prefix", &signature).unwrap();
        assert_eq!(
            key.verifying_key().verify(b"prefiX", &signature),
            Err(RsaError::BadSignature)
        );
        assert_eq!(
            key.verifying_key().verify(b"prefix", &signature[1..]),
            Err(RsaError::BadSignature)
        );
    }

    #[test]
    fn garbage_is_refused_with_an_error() {
        assert!(matches!(
            SigningKey::from_pkcs8_der(b"\x30\x03\x02\x01\x00"),
            Err(RsaError::BadPrivateKey(_))
        ));
        assert!(matches!(
            VerifyingKey::from_spki_der(&[0u8; 300]),
            Err(RsaError::BadPublicKey(_))
        ));
        assert!(matches!(
            VerifyingKey::from_spki_der(&vec![0x30; 100_000]),
            Err(RsaError::BadPublicKey(_))
        ));
    }
}
