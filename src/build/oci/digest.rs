//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and a reader that checks one while it
//! reads, so that no blob is trusted before its bytes have been hashed.

use std::fmt;
use std::io::{self, Read};

use sha2::Digest as _;

/// A digest algorithm allowed by the OCI image spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in digest strings and blob paths (`sha256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest: a known algorithm and lowercase hex of the right length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a digest string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<64 hex digits>)")]
    NoAlgorithm(String),
    #[error("digest {0:?} uses an unsupported algorithm (sha256 and sha512 are supported)")]
    Algorithm(String),
    #[error("digest {0:?} is not lowercase hex of the right length for its algorithm")]
    Hex(String),
}

impl Digest {
    /// Parses `algorithm:hex`.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::NoAlgorithm(s.to_string()))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(DigestError::Algorithm(s.to_string())),
        };
        let hex_ok = hex.len() == algorithm.hex_len()
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(DigestError::Hex(s.to_string()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_string(),
        })
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finish()
    }

    /// The digest of `bytes` with this digest's algorithm.
    pub fn same_algorithm_of(&self, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(self.algorithm);
        h.update(bytes);
        h.finish()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, which is also the blob's file name in a layout.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex digits, as tools show in progress lines.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental hash for one algorithm.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, bytes): (Algorithm, Vec<u8>) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Digest { algorithm, hex }
    }
}

/// A blob whose bytes did not match what its descriptor promised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("{what}: content digest is {actual}, expected {expected} (corrupt or tampered)")]
    Digest {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: {actual} bytes, but its descriptor says {expected}")]
    Size {
        what: String,
        expected: u64,
        actual: u64,
    },
}

/// Reads through `inner` while hashing; fails at end of data if the digest or the size
/// differs from what was expected, and fails as soon as more bytes than `size` arrive.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Option<Hasher>,
    expected: Digest,
    size: Option<u64>,
    seen: u64,
    what: String,
    verified: bool,
}

impl<R: Read> VerifyingReader<R> {
    /// `what` names the blob in errors (e.g. `layer sha256:… of docker://alpine`).
    pub fn new(inner: R, expected: Digest, size: Option<u64>, what: String) -> Self {
        VerifyingReader {
            inner,
            hasher: Some(Hasher::new(expected.algorithm())),
            expected,
            size,
            seen: 0,
            what,
            verified: false,
        }
    }

    /// Reads whatever is left and checks the digest. Callers whose consumer may stop before
    /// the end of the data (a tar reader stops at the end-of-archive blocks) call this.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.verified {
            return Ok(());
        }
        io::copy(self, &mut io::sink())?;
        if self.verified { Ok(()) } else { self.check() }
    }

    fn check(&mut self) -> io::Result<()> {
        if let Some(size) = self.size
            && size != self.seen
        {
            return Err(invalid(Mismatch::Size {
                what: self.what.clone(),
                expected: size,
                actual: self.seen,
            }));
        }
        let Some(hasher) = self.hasher.take() else {
            return Ok(());
        };
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(invalid(Mismatch::Digest {
                what: self.what.clone(),
                expected: self.expected.clone(),
                actual,
            }));
        }
        self.verified = true;
        Ok(())
    }
}

fn invalid(m: Mismatch) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, m)
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.verified {
            return Ok(0);
        }
        // Never read past the promised size by more than one byte: enough to notice a
        // blob that is too long without hashing an unbounded stream.
        let want = match self.size {
            Some(size) => {
                let left = size.saturating_sub(self.seen).saturating_add(1);
                buf.len().min(usize::try_from(left).unwrap_or(usize::MAX))
            }
            None => buf.len(),
        };
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.check()?;
            return Ok(0);
        }
        self.seen += n as u64;
        if let Some(size) = self.size
            && self.seen > size
        {
            return Err(invalid(Mismatch::Size {
                what: self.what.clone(),
                expected: size,
                actual: self.seen,
            }));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The [`Mismatch`] inside an I/O error made by [`VerifyingReader`], if that is what it is.
pub fn mismatch_of(err: &io::Error) -> Option<&Mismatch> {
    err.get_ref().and_then(|e| e.downcast_ref::<Mismatch>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn test_parse_and_display() {
        let d = Digest::parse(EMPTY).expect("valid");
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.short(), "e3b0c44298fc");
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn test_parse_refuses_bad_digests() {
        assert!(matches!(
            Digest::parse("e3b0"),
            Err(DigestError::NoAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("md5:abcd"),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            Digest::parse("sha256:ABC"),
            Err(DigestError::Hex(_))
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(Digest::parse(&upper), Err(DigestError::Hex(_))));
        // A path separator can never get into a blob file name.
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
    }

    #[test]
    fn test_verifying_reader_accepts_matching_content() {
        let data = b"hello world";
        let d = Digest::sha256_of(data);
        let mut r = VerifyingReader::new(&data[..], d, Some(11), "blob".into());
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("verified");
        assert_eq!(out, data);
        r.finish().expect("finish after end");
    }

    #[test]
    fn test_verifying_reader_detects_tampering() {
        let d = Digest::sha256_of(b"hello world");
        let mut r = VerifyingReader::new(&b"hello wOrld"[..], d, Some(11), "blob x".into());
        let err = r.read_to_end(&mut Vec::new()).expect_err("mismatch");
        let m = mismatch_of(&err).expect("a Mismatch");
        assert!(matches!(m, Mismatch::Digest { .. }));
        assert!(err.to_string().contains("blob x"), "{err}");
    }

    #[test]
    fn test_verifying_reader_detects_wrong_size() {
        let data = b"hello world";
        let d = Digest::sha256_of(data);
        let mut long = VerifyingReader::new(&data[..], d.clone(), Some(5), "b".into());
        let err = long.read_to_end(&mut Vec::new()).expect_err("too long");
        assert!(matches!(mismatch_of(&err), Some(Mismatch::Size { .. })));
        let mut short = VerifyingReader::new(&data[..], d, Some(20), "b".into());
        let err = short.read_to_end(&mut Vec::new()).expect_err("too short");
        assert!(matches!(mismatch_of(&err), Some(Mismatch::Size { .. })));
    }

    #[test]
    fn test_finish_drains_unread_rest() {
        let data = vec![7u8; 100_000];
        let d = Digest::sha256_of(&data);
        let mut r = VerifyingReader::new(&data[..], d, Some(100_000), "b".into());
        let mut first = [0u8; 10];
        r.read_exact(&mut first).expect("read");
        r.finish().expect("the rest verifies");
        let mut bad = VerifyingReader::new(&data[..50], Digest::sha256_of(b"x"), None, "b".into());
        assert!(bad.finish().is_err());
    }

    #[test]
    fn test_sha512_supported() {
        let d = Digest::sha256_of(b"x");
        let s512 = Digest::parse(&format!("sha512:{}", "a".repeat(128))).expect("sha512");
        assert_eq!(s512.algorithm(), Algorithm::Sha512);
        assert_eq!(d.same_algorithm_of(b"x"), d);
    }
}
