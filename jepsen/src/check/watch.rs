//! Checker `watch` (not implemented yet).
