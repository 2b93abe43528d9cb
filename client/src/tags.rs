//! Tags calls (tags work): `impl Client` methods. OWNER as named.
