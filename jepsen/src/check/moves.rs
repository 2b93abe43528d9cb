//! Checker `moves` (not implemented yet).
