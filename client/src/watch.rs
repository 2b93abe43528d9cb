//! Watch stream (watch work): `impl Client` methods. OWNER as named.
