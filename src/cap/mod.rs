//! Tahoe-LAFS capability strings (placeholder).
