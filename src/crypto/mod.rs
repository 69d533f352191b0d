//! Tahoe-LAFS's cryptographic primitives (placeholder).
