//! Checker `namespace` (not implemented yet).
