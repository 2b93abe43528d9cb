//! Checker `linear` (not implemented yet).
