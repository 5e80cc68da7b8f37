//! sifr-idmap: /etc/subuid and /etc/subgid parsing, id-map planning and writing.
