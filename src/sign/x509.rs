//! `verify --certificate`: checks that a leaf certificate chains to a trusted root through the
//! given intermediates and may sign code, then hands back its public key as a DSSE verifier
//! (what Apptainer does, `internal/pkg/signature/verify.go`).
//!
//! The chain rules follow Go's `x509.Certificate.Verify` for what matters here: every
//! certificate within its validity period; each issuer's subject equal to the issued
//! certificate's issuer name (and key identifiers equal when both are present); each issuer a
//! CA (basic constraints) allowed to sign certificates (key usage), within its path length;
//! every signature valid; the Code Signing extended key usage (or any) on every certificate
//! that restricts usages; no unknown critical extension. Name constraints are not
//! implemented, so a critical one is refused rather than ignored. Revocation (OCSP) is not
//! checked.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::Digest as _;
use x509_cert::Certificate;
use x509_cert::der::Encode as _;
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::oid::db::rfc5280 as oids;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectKeyIdentifier,
};

use super::pem::{HashKind, PublicKey};

/// Where system roots are read from when `--certificate-roots` is not given (Debian).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Largest certificate bundle read.
pub const MAX_BUNDLE_BYTES: u64 = 8 * 1024 * 1024;

/// Longest chain considered.
const MAX_DEPTH: usize = 8;

/// A certificate problem, naming the file or certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read certificates from {}: {why}", path.display())]
    Load { path: PathBuf, why: String },
    #[error("x509: {0}")]
    Chain(String),
}

/// Reads every PEM certificate in `path`.
pub fn load_certificates(path: &Path) -> Result<Vec<Certificate>, CertError> {
    use std::io::Read;
    let fail = |why: String| CertError::Load {
        path: path.to_path_buf(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(fail("larger than 8 MiB".into()));
    }
    // Split by hand: x509-cert's `load_pem_chain` panics on empty input.
    let mut certs = Vec::new();
    for (i, block) in pem_blocks(&bytes, "CERTIFICATE").into_iter().enumerate() {
        use x509_cert::der::DecodePem as _;
        let cert = Certificate::from_pem(block)
            .map_err(|e| fail(format!("certificate {}: {e}", i + 1)))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(fail("no certificate found".into()));
    }
    Ok(certs)
}

/// The `-----BEGIN <label>-----` … `-----END <label>-----` blocks of `bytes`, in order.
fn pem_blocks<'a>(bytes: &'a [u8], label: &str) -> Vec<&'a [u8]> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(start) = find(rest, begin.as_bytes()) {
        let Some(stop) = find(&rest[start..], end.as_bytes()) else {
            // An unterminated block: let the decoder report it.
            out.push(&rest[start..]);
            break;
        };
        let stop = start + stop + end.len();
        out.push(&rest[start..stop]);
        rest = &rest[stop..];
    }
    out
}

/// The subject of `c`, for messages.
fn subject(c: &Certificate) -> String {
    c.tbs_certificate.subject.to_string()
}

/// The leaf's public key, once `leaf` is shown to chain to one of `roots` through
/// `intermediates` and to allow code signing at time `now`.
pub fn verify_code_signing(
    leaf: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    now: SystemTime,
) -> Result<PublicKey, CertError> {
    let chain_err = |m: String| CertError::Chain(m);
    let leaf_key = PublicKey::from_spki_der(
        &leaf
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| chain_err(e.to_string()))?,
    )
    .map_err(|e| chain_err(format!("leaf \"{}\": {e}", subject(leaf))))?;
    check_cert(leaf, now, false)?;
    let mut last = String::from("certificate signed by unknown authority");
    if build(
        leaf,
        intermediates,
        roots,
        now,
        0,
        &mut Vec::new(),
        &mut last,
    )? {
        Ok(leaf_key)
    } else {
        Err(chain_err(format!("leaf \"{}\": {last}", subject(leaf))))
    }
}

/// Depth-first search for a path from `cert` to a root. Returns whether one was found;
/// `last` keeps the most useful reason when none is.
fn build(
    cert: &Certificate,
    intermediates: &[Certificate],
    roots: &[Certificate],
    now: SystemTime,
    depth: usize,
    seen: &mut Vec<Vec<u8>>,
    last: &mut String,
) -> Result<bool, CertError> {
    if depth > MAX_DEPTH {
        *last = "certificate chain too long".into();
        return Ok(false);
    }
    let candidates = roots
        .iter()
        .map(|c| (c, true))
        .chain(intermediates.iter().map(|c| (c, false)));
    for (issuer, is_root) in candidates {
        if issuer.tbs_certificate.subject != cert.tbs_certificate.issuer {
            continue;
        }
        if let (Some(aki), Some(ski)) = (authority_key_id(cert), subject_key_id(issuer))
            && aki != ski
        {
            continue;
        }
        let der = issuer.to_der().unwrap_or_default();
        if seen.contains(&der) {
            continue;
        }
        if let Err(e) = check_signature(cert, issuer) {
            *last = e;
            continue;
        }
        if let Err(CertError::Chain(e)) = check_cert(issuer, now, true) {
            *last = e;
            continue;
        }
        if let Err(e) = check_path_len(issuer, depth) {
            *last = e;
            continue;
        }
        if is_root {
            return Ok(true);
        }
        seen.push(der);
        if build(issuer, intermediates, roots, now, depth + 1, seen, last)? {
            return Ok(true);
        }
        seen.pop();
    }
    Ok(false)
}

fn authority_key_id(c: &Certificate) -> Option<Vec<u8>> {
    let (_, aki) = c.tbs_certificate.get::<AuthorityKeyIdentifier>().ok()??;
    aki.key_identifier.map(|k| k.as_bytes().to_vec())
}

fn subject_key_id(c: &Certificate) -> Option<Vec<u8>> {
    let (_, ski) = c.tbs_certificate.get::<SubjectKeyIdentifier>().ok()??;
    Some(ski.0.as_bytes().to_vec())
}

/// Validity, extensions and usages of one certificate (`ca`: it issues another one).
fn check_cert(c: &Certificate, now: SystemTime, ca: bool) -> Result<(), CertError> {
    let name = subject(c);
    let fail = |m: String| CertError::Chain(format!("certificate \"{name}\": {m}"));
    let v = &c.tbs_certificate.validity;
    if now < v.not_before.to_system_time() || now > v.not_after.to_system_time() {
        return Err(fail(format!(
            "certificate has expired or is not yet valid (valid from {} to {})",
            v.not_before, v.not_after
        )));
    }
    const KNOWN: [ObjectIdentifier; 6] = [
        oids::ID_CE_KEY_USAGE,
        oids::ID_CE_BASIC_CONSTRAINTS,
        oids::ID_CE_SUBJECT_ALT_NAME,
        oids::ID_CE_EXT_KEY_USAGE,
        oids::ID_CE_CERTIFICATE_POLICIES,
        oids::ID_CE_SUBJECT_KEY_IDENTIFIER,
    ];
    for ext in c.tbs_certificate.extensions.as_deref().unwrap_or(&[]) {
        if ext.critical && !KNOWN.contains(&ext.extn_id) {
            return Err(fail(format!(
                "unhandled critical extension {}",
                ext.extn_id
            )));
        }
    }
    let bad = |e: x509_cert::der::Error| fail(format!("malformed extension: {e}"));
    if ca {
        let bc = c.tbs_certificate.get::<BasicConstraints>().map_err(bad)?;
        if !bc.is_some_and(|(_, b)| b.ca) {
            return Err(fail(
                "not a CA (basic constraints) but it issued a certificate".into(),
            ));
        }
        if let Some((_, ku)) = c.tbs_certificate.get::<KeyUsage>().map_err(bad)?
            && !ku.key_cert_sign()
        {
            return Err(fail("key usage does not allow signing certificates".into()));
        }
    }
    if let Some((_, eku)) = c.tbs_certificate.get::<ExtendedKeyUsage>().map_err(bad)?
        && !eku
            .0
            .iter()
            .any(|o| *o == oids::ID_KP_CODE_SIGNING || *o == oids::ANY_EXTENDED_KEY_USAGE)
    {
        return Err(fail(
            "certificate specifies an incompatible key usage (Code Signing is required)".into(),
        ));
    }
    Ok(())
}

/// An issuer at `depth` (0 = it signed the leaf) has `depth` CA certificates below it.
fn check_path_len(issuer: &Certificate, depth: usize) -> Result<(), String> {
    if let Ok(Some((_, bc))) = issuer.tbs_certificate.get::<BasicConstraints>()
        && let Some(max) = bc.path_len_constraint
        && depth > usize::from(max)
    {
        return Err(format!(
            "certificate \"{}\": path length constraint {max} exceeded",
            subject(issuer)
        ));
    }
    Ok(())
}

/// ecdsa-with-SHA256/384/512, sha256/384/512WithRSAEncryption, Ed25519.
fn signature_hash(alg: &ObjectIdentifier) -> Option<(Option<HashKind>, &'static str)> {
    const fn o(s: &str) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(s)
    }
    const ECDSA_SHA256: ObjectIdentifier = o("1.2.840.10045.4.3.2");
    const ECDSA_SHA384: ObjectIdentifier = o("1.2.840.10045.4.3.3");
    const ECDSA_SHA512: ObjectIdentifier = o("1.2.840.10045.4.3.4");
    const RSA_SHA256: ObjectIdentifier = o("1.2.840.113549.1.1.11");
    const RSA_SHA384: ObjectIdentifier = o("1.2.840.113549.1.1.12");
    const RSA_SHA512: ObjectIdentifier = o("1.2.840.113549.1.1.13");
    match *alg {
        a if a == ECDSA_SHA256 => Some((Some(HashKind::Sha256), "ECDSA")),
        a if a == ECDSA_SHA384 => Some((Some(HashKind::Sha384), "ECDSA")),
        a if a == ECDSA_SHA512 => Some((Some(HashKind::Sha512), "ECDSA")),
        a if a == RSA_SHA256 => Some((Some(HashKind::Sha256), "RSA")),
        a if a == RSA_SHA384 => Some((Some(HashKind::Sha384), "RSA")),
        a if a == RSA_SHA512 => Some((Some(HashKind::Sha512), "RSA")),
        a if a == super::pem::OID_ED25519 => Some((None, "Ed25519")),
        _ => None,
    }
}

/// Checks that `issuer`'s key made `cert`'s signature.
fn check_signature(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    let alg = &cert.signature_algorithm.oid;
    let (hash, family) = signature_hash(alg)
        .ok_or_else(|| format!("unsupported certificate signature algorithm {alg}"))?;
    let spki = issuer
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    let key = PublicKey::from_spki_der(&spki)?;
    let family_ok = matches!(
        (&key, family),
        (PublicKey::Ed25519(_), "Ed25519")
            | (PublicKey::Rsa(_), "RSA")
            | (PublicKey::P256(_) | PublicKey::P384(_), "ECDSA")
    );
    if !family_ok {
        return Err(format!(
            "certificate signed with {family} but the issuer's key is {}",
            key.algorithm()
        ));
    }
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = cert
        .signature
        .as_bytes()
        .ok_or("certificate signature is not a whole number of bytes")?;
    let digest = match hash {
        Some(HashKind::Sha256) | None => sha2::Sha256::digest(&tbs).to_vec(),
        Some(HashKind::Sha384) => sha2::Sha384::digest(&tbs).to_vec(),
        Some(HashKind::Sha512) => sha2::Sha512::digest(&tbs).to_vec(),
    };
    if key.verify_prehashed(hash.unwrap_or(HashKind::Sha256), &digest, &tbs, sig) {
        Ok(())
    } else {
        Err(format!(
            "certificate signature does not verify with the key of \"{}\"",
            subject(issuer)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::pgp::tests::testdata;
    use std::time::Duration;

    fn certs(name: &str) -> Option<Vec<Certificate>> {
        load_certificates(&testdata().join("sif/apptainer/certs").join(name)).ok()
    }

    /// 2025-01-01, inside the fixtures' 2020–2030 validity.
    fn in_validity() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_600)
    }

    #[test]
    fn test_fixture_chain_verifies_and_gives_the_rsa_key() {
        let (Some(leaf), Some(int), Some(root)) = (
            certs("leaf.pem"),
            certs("intermediate.pem"),
            certs("root.pem"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let key = verify_code_signing(&leaf[0], &int, &root, in_validity()).expect("valid chain");
        let rsa = crate::sign::pgp::tests::read_fixture("keys/rsa-public.pem").expect("rsa");
        assert_eq!(key, PublicKey::from_pem(&rsa).expect("pem"));
    }

    #[test]
    fn test_chain_failures() {
        let (Some(leaf), Some(int), Some(root)) = (
            certs("leaf.pem"),
            certs("intermediate.pem"),
            certs("root.pem"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        // Missing intermediate.
        let err = verify_code_signing(&leaf[0], &[], &root, in_validity()).expect_err("no path");
        assert!(err.to_string().contains("unknown authority"), "{err}");
        // Trusting the intermediate directly is enough; trusting the leaf itself is not.
        assert!(verify_code_signing(&leaf[0], &[], &int, in_validity()).is_ok());
        assert!(verify_code_signing(&leaf[0], &int, &leaf, in_validity()).is_err());
        // Expired (2031).
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(1_924_992_000);
        let err = verify_code_signing(&leaf[0], &int, &root, late).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
        // The root used as a leaf lacks the Code Signing usage? It has no EKU, so only its
        // chain matters: a self-signed root verifies against itself.
        assert!(verify_code_signing(&root[0], &[], &root, in_validity()).is_ok());
        // A tampered leaf signature.
        let mut bad = leaf[0].clone();
        let mut sig = bad.signature.raw_bytes().to_vec();
        let last = sig.len() - 1;
        sig[last] ^= 1;
        bad.signature = x509_cert::der::asn1::BitString::from_bytes(&sig).expect("bits");
        assert!(verify_code_signing(&bad, &int, &root, in_validity()).is_err());
    }

    #[test]
    fn test_load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("empty.pem");
        std::fs::write(&p, "").expect("write");
        let err = load_certificates(&p).expect_err("empty");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        std::fs::write(
            &p,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        assert!(load_certificates(&p).is_err());
        std::fs::write(&p, "-----BEGIN CERTIFICATE-----\nAAAA\n").expect("write");
        assert!(load_certificates(&p).is_err());
        std::fs::write(&p, "just text\n").expect("write");
        assert!(load_certificates(&p).is_err());
    }
}
