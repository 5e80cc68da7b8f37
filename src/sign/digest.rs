//! Digests in the signed image metadata: the hash algorithms the reference accepts, the
//! `<alg>:<lower hex>` text form, and hashing of the three things a signature covers (the
//! header digest input, a descriptor digest input, an object's data).

use std::fmt;

use sha2::Digest as _;

use crate::image::sif::{Descriptor, SifImage};

use super::error::IntegrityError;

/// A hash algorithm allowed in image metadata (Go `crypto.Hash` values the reference maps to
/// names in `supportedDigestAlgorithms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    Sha512_224,
    Sha512_256,
}

impl HashAlg {
    /// Every supported algorithm.
    pub const ALL: [HashAlg; 6] = [
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sha512_224,
        HashAlg::Sha512_256,
    ];

    /// The name used in digest text.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Sha224 => "sha224",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Sha512_224 => "sha512_224",
            HashAlg::Sha512_256 => "sha512_256",
        }
    }

    /// The algorithm called `name` in digest text.
    pub fn from_name(name: &str) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|h| h.name() == name)
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlg::Sha224 | HashAlg::Sha512_224 => 28,
            HashAlg::Sha256 | HashAlg::Sha512_256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// A fresh hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            HashAlg::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            HashAlg::Sha512_224 => Hasher::Sha512_224(sha2::Sha512_224::new()),
            HashAlg::Sha512_256 => Hasher::Sha512_256(sha2::Sha512_256::new()),
        }
    }

    /// The digest of `data`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        let mut h = self.hasher();
        h.update(data);
        h.finish()
    }
}

/// A running hash of one of the supported algorithms.
#[derive(Clone)]
pub enum Hasher {
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Sha512_224(sha2::Sha512_224),
    Sha512_256(sha2::Sha512_256),
}

impl Hasher {
    /// Feeds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha512_224(h) => h.update(data),
            Hasher::Sha512_256(h) => h.update(data),
        }
    }

    /// The digest.
    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
            Hasher::Sha512_224(h) => h.finalize().to_vec(),
            Hasher::Sha512_256(h) => h.finalize().to_vec(),
        }
    }
}

/// A digest value with its algorithm; text form `<alg>:<lower hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub alg: HashAlg,
    pub value: Vec<u8>,
}

impl Digest {
    /// Parses `<alg>:<hex>` with the reference's rules: exactly one `:`, a known algorithm and
    /// a value of that algorithm's length.
    pub fn parse(text: &str) -> Result<Digest, IntegrityError> {
        let malformed = |why: &str| IntegrityError::DigestMalformed {
            text: text.chars().take(80).collect(),
            why: why.to_string(),
        };
        let mut parts = text.split(':');
        let (Some(name), Some(hexval), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(malformed("expected <algorithm>:<hex>"));
        };
        let value = hex::decode(hexval).map_err(|e| malformed(&e.to_string()))?;
        let alg = HashAlg::from_name(name).ok_or_else(|| malformed("unsupported algorithm"))?;
        if value.len() != alg.digest_len() {
            return Err(malformed("wrong length for the algorithm"));
        }
        Ok(Digest { alg, value })
    }

    /// The digest of `data`.
    pub fn of(alg: HashAlg, data: &[u8]) -> Digest {
        Digest {
            alg,
            value: alg.hash(data),
        }
    }

    /// True when `data` hashes to this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        self.alg.hash(data) == self.value
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg.name(), hex::encode(&self.value))
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Streams object `d`'s data through a hasher of `alg`.
pub fn object_digest(
    img: &SifImage,
    d: &Descriptor,
    alg: HashAlg,
) -> Result<Digest, IntegrityError> {
    let mut h = alg.hasher();
    let mut buf = vec![0u8; 1 << 16];
    let mut pos = 0u64;
    loop {
        let n = img
            .read_object_at(d, pos, &mut buf)
            .map_err(|e| IntegrityError::Read(e.to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    let want = d.range().end - d.range().start;
    if pos != want {
        return Err(IntegrityError::Read(format!(
            "object {}: read {pos} of {want} bytes",
            d.id
        )));
    }
    Ok(Digest {
        alg,
        value: h.finish(),
    })
}

/// The digest of `d`'s descriptor digest input (its ID relative to its group).
pub fn descriptor_digest(img: &SifImage, d: &Descriptor, alg: HashAlg) -> Digest {
    Digest::of(alg, &img.descriptor_digest_input(d))
}

/// The digest of the image's header digest input.
pub fn header_digest(img: &SifImage, alg: HashAlg) -> Digest {
    Digest::of(alg, &img.header_digest_input())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_names_and_lengths() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::from_name(alg.name()), Some(alg));
            assert_eq!(alg.hash(b"x").len(), alg.digest_len(), "{alg:?}");
        }
        assert_eq!(HashAlg::from_name("md5"), None);
    }

    #[test]
    fn test_digest_text_round_trip() {
        let d = Digest::of(HashAlg::Sha256, b"abc");
        let text = d.to_string();
        assert_eq!(
            text,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&text).expect("parses"), d);
        assert!(d.matches(b"abc") && !d.matches(b"abd"));
        let json = serde_json::to_string(&d).expect("json");
        assert_eq!(json, format!("\"{text}\""));
    }

    #[test]
    fn test_malformed_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:zz",
            "sha256:abcd",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:ba:7816",
        ] {
            let err = Digest::parse(bad).expect_err(bad);
            assert!(
                matches!(err, IntegrityError::DigestMalformed { .. }),
                "{bad}: {err}"
            );
        }
    }
}
