//! Topology and location calls (topology work): `impl Client` methods. OWNER as named.
