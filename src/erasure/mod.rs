//! Zfec-compatible Reed–Solomon erasure coding over GF(2^8) (placeholder until the core lands).
