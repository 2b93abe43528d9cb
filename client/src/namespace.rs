//! Namespace and Txn calls (namespace work): `impl Client` methods. OWNER as named.
