//! PEM keys for DSSE signatures (`sign --key`, `verify --key`): Ed25519, RSA and ECDSA
//! (P-256, P-384) public and private keys, signing and checking with the semantics of the
//! sigstore verifiers the reference loads with SHA-256 (Ed25519: pure; RSA: PKCS#1 v1.5 over
//! SHA-256; ECDSA: SHA-256, ASN.1 DER signature), and the OpenSSH-style key ID written into
//! DSSE envelopes.
//!
//! Parsing goes through the RustCrypto crates (pkcs8, spki, pkcs1, sec1 via the key crates'
//! re-exports); nothing is decoded by hand.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::Digest as _;
use x509_cert::der::Decode as _;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoRef;

/// rsaEncryption.
pub const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-ecPublicKey.
pub const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// id-Ed25519.
pub const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// The P-256 curve (prime256v1).
pub const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// The P-384 curve (secp384r1).
pub const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Largest PEM file read.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// A PEM key that cannot be used. Displays as `<path>: <why>`.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct PemError {
    pub path: PathBuf,
    pub why: String,
}

fn pem_err(path: &Path, why: impl Into<String>) -> PemError {
    PemError {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// A public key that can check DSSE signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// A private key that can make DSSE signatures.
#[derive(Debug, Clone)]
pub enum PrivateKey {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

/// Reads a PEM file, refusing large ones.
fn read_pem(path: &Path) -> Result<Vec<u8>, PemError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| pem_err(path, e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| pem_err(path, e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(pem_err(path, "larger than 1 MiB; is it a PEM key?"));
    }
    Ok(bytes)
}

/// Decodes the first PEM block of `bytes`.
fn decode_block(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let start = find(bytes, b"-----BEGIN ").ok_or("no PEM block (-----BEGIN ...-----) found")?;
    let rest = &bytes[start..];
    // The block ends at the line after its END marker.
    let end = find(rest, b"-----END ")
        .and_then(|e| find(&rest[e + 9..], b"-----").map(|x| e + 9 + x + 5))
        .ok_or("unterminated PEM block")?;
    let (label, der) =
        x509_cert::der::pem::decode_vec(&rest[..end]).map_err(|e| format!("invalid PEM: {e}"))?;
    Ok((label.to_string(), der))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl PublicKey {
    /// Loads a PEM public key (`PUBLIC KEY`, or PKCS#1 `RSA PUBLIC KEY`).
    pub fn load(path: &Path) -> Result<PublicKey, PemError> {
        let bytes = read_pem(path)?;
        PublicKey::from_pem(&bytes).map_err(|why| pem_err(path, why))
    }

    /// Parses PEM text.
    pub fn from_pem(bytes: &[u8]) -> Result<PublicKey, String> {
        let (label, der) = decode_block(bytes)?;
        match label.as_str() {
            "PUBLIC KEY" => PublicKey::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                use rsa::pkcs1::DecodeRsaPublicKey;
                rsa::RsaPublicKey::from_pkcs1_der(&der)
                    .map(PublicKey::Rsa)
                    .map_err(|e| format!("invalid RSA public key: {e}"))
            }
            l if l.contains("PRIVATE KEY") => Err(format!(
                "this is a private key ({l}); give the public key (openssl pkey -pubout)"
            )),
            "CERTIFICATE" => Err("this is a certificate; use --certificate for it".into()),
            l => Err(format!(
                "unsupported PEM block \"{l}\" (expected PUBLIC KEY)"
            )),
        }
    }

    /// Parses a DER SubjectPublicKeyInfo (as in a certificate).
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, String> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("invalid public key info: {e}"))?;
        let key = spki.subject_public_key.raw_bytes();
        let alg = spki.algorithm.oid;
        if alg == OID_ED25519 {
            let b: [u8; 32] = key
                .try_into()
                .map_err(|_| "Ed25519 public key is not 32 bytes")?;
            return ed25519_dalek::VerifyingKey::from_bytes(&b)
                .map(PublicKey::Ed25519)
                .map_err(|e| format!("invalid Ed25519 public key: {e}"));
        }
        if alg == OID_RSA {
            use rsa::pkcs1::DecodeRsaPublicKey;
            return rsa::RsaPublicKey::from_pkcs1_der(key)
                .map(PublicKey::Rsa)
                .map_err(|e| format!("invalid RSA public key: {e}"));
        }
        if alg == OID_EC {
            let curve = spki
                .algorithm
                .parameters_oid()
                .map_err(|_| "ECDSA key without a named curve")?;
            if curve == OID_P256 {
                return p256::ecdsa::VerifyingKey::from_sec1_bytes(key)
                    .map(PublicKey::P256)
                    .map_err(|e| format!("invalid P-256 public key: {e}"));
            }
            if curve == OID_P384 {
                return p384::ecdsa::VerifyingKey::from_sec1_bytes(key)
                    .map(PublicKey::P384)
                    .map_err(|e| format!("invalid P-384 public key: {e}"));
            }
            return Err(format!(
                "unsupported ECDSA curve {curve} (P-256 and P-384 are supported)"
            ));
        }
        Err(format!(
            "unsupported key algorithm {alg} (Ed25519, RSA and ECDSA are supported)"
        ))
    }

    /// A short name of the algorithm.
    pub fn algorithm(&self) -> &'static str {
        match self {
            PublicKey::Ed25519(_) => "Ed25519",
            PublicKey::Rsa(_) => "RSA",
            PublicKey::P256(_) => "ECDSA P-256",
            PublicKey::P384(_) => "ECDSA P-384",
        }
    }

    /// Checks `sig` over `msg` as the reference's verifiers do with SHA-256.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let digest = sha2::Sha256::digest(msg);
        self.verify_prehashed(HashKind::Sha256, &digest, msg, sig)
    }

    /// Checks a signature given the message's digest (RSA and ECDSA) or the message itself
    /// (Ed25519 signs messages, not digests).
    pub fn verify_prehashed(&self, hash: HashKind, digest: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        match self {
            PublicKey::Ed25519(k) => {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|s| k.verify(msg, &s).is_ok())
            }
            PublicKey::Rsa(k) => {
                let scheme = match hash {
                    HashKind::Sha256 => rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(),
                    HashKind::Sha384 => rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha384>(),
                    HashKind::Sha512 => rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha512>(),
                };
                k.verify(scheme, digest, sig).is_ok()
            }
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
        }
    }

    /// The SSH wire-format encoding of the key (RFC 4253 / 5656 / 8709).
    fn ssh_wire(&self) -> Vec<u8> {
        use rsa::traits::PublicKeyParts;
        let mut w = Vec::new();
        match self {
            PublicKey::Ed25519(k) => {
                ssh_string(&mut w, b"ssh-ed25519");
                ssh_string(&mut w, k.as_bytes());
            }
            PublicKey::Rsa(k) => {
                ssh_string(&mut w, b"ssh-rsa");
                ssh_mpint(&mut w, &k.e().to_bytes_be());
                ssh_mpint(&mut w, &k.n().to_bytes_be());
            }
            PublicKey::P256(k) => {
                ssh_string(&mut w, b"ecdsa-sha2-nistp256");
                ssh_string(&mut w, b"nistp256");
                ssh_string(&mut w, k.to_encoded_point(false).as_bytes());
            }
            PublicKey::P384(k) => {
                ssh_string(&mut w, b"ecdsa-sha2-nistp384");
                ssh_string(&mut w, b"nistp384");
                ssh_string(&mut w, k.to_encoded_point(false).as_bytes());
            }
        }
        w
    }

    /// The OpenSSH-style fingerprint `SHA256:<unpadded base64>` used as the DSSE key ID.
    pub fn key_id(&self) -> String {
        let digest = sha2::Sha256::digest(self.ssh_wire());
        format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        )
    }
}

/// The hash a certificate signature uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Sha256,
    Sha384,
    Sha512,
}

fn ssh_string(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&u32::try_from(b.len()).unwrap_or(0).to_be_bytes());
    w.extend_from_slice(b);
}

fn ssh_mpint(w: &mut Vec<u8>, be: &[u8]) {
    let trimmed: &[u8] = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => &[],
    };
    let mut v = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(trimmed);
    ssh_string(w, &v);
}

impl PrivateKey {
    /// Loads a PEM private key: PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1
    /// `EC PRIVATE KEY`. Encrypted keys are refused with a hint.
    pub fn load(path: &Path) -> Result<PrivateKey, PemError> {
        let bytes = read_pem(path)?;
        PrivateKey::from_pem(&bytes).map_err(|why| pem_err(path, why))
    }

    /// Parses PEM text.
    pub fn from_pem(bytes: &[u8]) -> Result<PrivateKey, String> {
        let (label, der) = decode_block(bytes)?;
        match label.as_str() {
            "PRIVATE KEY" => PrivateKey::from_pkcs8_der(&der),
            "RSA PRIVATE KEY" => {
                use rsa::pkcs1::DecodeRsaPrivateKey;
                rsa::RsaPrivateKey::from_pkcs1_der(&der)
                    .map(|k| PrivateKey::Rsa(Box::new(k)))
                    .map_err(|e| format!("invalid RSA private key: {e}"))
            }
            "EC PRIVATE KEY" => {
                if let Ok(k) = p256::SecretKey::from_sec1_der(&der) {
                    return Ok(PrivateKey::P256(k.into()));
                }
                p384::SecretKey::from_sec1_der(&der)
                    .map(|k| PrivateKey::P384(k.into()))
                    .map_err(|_| {
                        "invalid or unsupported EC private key (P-256 and P-384 are supported)"
                            .into()
                    })
            }
            l if l.contains("ENCRYPTED") => Err(format!(
                "encrypted private keys ({l}) are not supported; decrypt it first (openssl pkey -in KEY -out PLAIN) and keep the result private"
            )),
            "PUBLIC KEY" => Err("this is a public key; sign with the private key".into()),
            l => Err(format!(
                "unsupported PEM block \"{l}\" (expected PRIVATE KEY)"
            )),
        }
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<PrivateKey, String> {
        use rsa::pkcs8::DecodePrivateKey as _;
        let info = rsa::pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| format!("invalid PKCS#8 private key: {e}"))?;
        let alg = info.algorithm.oid;
        if alg == OID_ED25519 {
            return ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map(PrivateKey::Ed25519)
                .map_err(|e| format!("invalid Ed25519 private key: {e}"));
        }
        if alg == OID_RSA {
            return rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|e| format!("invalid RSA private key: {e}"));
        }
        if alg == OID_EC {
            let curve = info
                .algorithm
                .parameters_oid()
                .map_err(|_| "ECDSA key without a named curve")?;
            if curve == OID_P256 {
                return p256::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(PrivateKey::P256)
                    .map_err(|e| format!("invalid P-256 private key: {e}"));
            }
            if curve == OID_P384 {
                return p384::ecdsa::SigningKey::from_pkcs8_der(der)
                    .map(PrivateKey::P384)
                    .map_err(|e| format!("invalid P-384 private key: {e}"));
            }
            return Err(format!(
                "unsupported ECDSA curve {curve} (P-256 and P-384 are supported)"
            ));
        }
        Err(format!(
            "unsupported key algorithm {alg} (Ed25519, RSA and ECDSA are supported)"
        ))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::Ed25519(k) => PublicKey::Ed25519(k.verifying_key()),
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    /// Signs `msg` as the reference's signers do with SHA-256.
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, String> {
        use p256::ecdsa::signature::Signer as _;
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let digest = sha2::Sha256::digest(msg);
        match self {
            PrivateKey::Ed25519(k) => Ok(k.sign(msg).to_bytes().to_vec()),
            PrivateKey::Rsa(k) => k
                .sign(rsa::Pkcs1v15Sign::new::<rsa::sha2::Sha256>(), &digest)
                .map_err(|e| e.to_string()),
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature =
                    k.sign_prehash(&digest).map_err(|e| e.to_string())?;
                Ok(s.to_der().as_bytes().to_vec())
            }
            PrivateKey::P384(k) => {
                let s: p384::ecdsa::Signature =
                    k.sign_prehash(&digest).map_err(|e| e.to_string())?;
                Ok(s.to_der().as_bytes().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::pgp::tests::read_fixture;

    fn pair(name: &str) -> Option<(PrivateKey, PublicKey)> {
        let private = read_fixture(&format!("keys/{name}-private.pem"))?;
        let public = read_fixture(&format!("keys/{name}-public.pem"))?;
        Some((
            PrivateKey::from_pem(&private).expect("private"),
            PublicKey::from_pem(&public).expect("public"),
        ))
    }

    #[test]
    fn test_fixture_keys_sign_and_verify() {
        for name in ["ed25519", "rsa", "ecdsa"] {
            let Some((private, public)) = pair(name) else {
                crate::testutil::skip("fixtures not found");
                return;
            };
            assert_eq!(private.public(), public, "{name}");
            let sig = private.sign(b"message").expect("sign");
            assert!(public.verify(b"message", &sig), "{name}");
            assert!(!public.verify(b"messagE", &sig), "{name}");
            assert!(!public.verify(b"message", &sig[1..]), "{name}");
        }
    }

    #[test]
    fn test_key_ids_match_the_reference() {
        let (Some((_, ed)), Some((_, rsa))) = (pair("ed25519"), pair("rsa")) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        assert_eq!(
            ed.key_id(),
            "SHA256:x6l8ZblpSSXGaPMCzySedWg88BwIFcz8jlPb6el0mFs"
        );
        assert_eq!(
            rsa.key_id(),
            "SHA256:BhCwr7qZulYcOMSl2Jt2DuYHxHNnN6th4NdMqR/PGa4"
        );
    }

    #[test]
    fn test_bad_pem_input() {
        assert!(PublicKey::from_pem(b"").is_err());
        assert!(
            PublicKey::from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        let err =
            PublicKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .expect_err("private");
        assert!(err.contains("private key"), "{err}");
        let err = PrivateKey::from_pem(
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .expect_err("encrypted");
        assert!(err.contains("not supported"), "{err}");
        if let Some(public) = read_fixture("keys/rsa-public.pem") {
            let err = PrivateKey::from_pem(&public).expect_err("public");
            assert!(err.contains("public key"), "{err}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let err = PublicKey::load(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
