//! OpenPGP on top of rpgp (`pgp` crate): reading keys (armored or binary, public or secret,
//! gpg exports included), key facts for listings, an in-memory keyring of public keys tagged
//! with where they came from, and making and checking clear-signed messages the way the
//! reference (go-crypto) does.
//!
//! rpgp pitfalls handled here (`shared/reference/rust-stack.md` §5): trailing spaces and tabs
//! are trimmed from every line before clear-signing, because rpgp hashes them while every
//! verifier strips them; keys are generated as RSA or Ed25519Legacy v4 keys, the forms
//! go-crypto and gpg 2.2 read.

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, PublicOrSecret, SecretKeyParamsBuilder,
    SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyDetails, KeyVersion, Password, PublicParams, Timestamp};

/// Length of a v4 fingerprint.
pub const FINGERPRINT_LEN: usize = 20;

/// Largest armored or binary key file read.
pub const MAX_KEY_FILE_BYTES: u64 = 16 * 1024 * 1024;

const CLEARSIGN_BEGIN: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";

/// Where a public key in a [`Keyring`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The user's own keyring.
    Local,
    /// The install's global keyring (admin-managed).
    Global,
    /// Fetched from a keyserver for this verification only.
    Remote,
}

/// A key read from a file: public, or secret (which also carries its public part).
pub type ParsedKey = PublicOrSecret;

/// Reads every key in `bytes`: binary packets, or one or more ASCII-armored blocks. An empty
/// input holds no keys.
pub fn parse_keys(bytes: &[u8]) -> Result<Vec<ParsedKey>, String> {
    let trimmed = bytes.trim_ascii_start();
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    if trimmed.starts_with(b"-----BEGIN PGP") {
        // Concatenated exports (`cat a.asc b.asc`) hold several armor blocks.
        for block in armor_blocks(trimmed) {
            let (keys, _) = PublicOrSecret::from_armor_many(block).map_err(|e| e.to_string())?;
            for k in keys {
                out.push(k.map_err(|e| e.to_string())?);
            }
        }
    } else {
        let keys = PublicOrSecret::from_bytes_many(trimmed).map_err(|e| e.to_string())?;
        for k in keys {
            out.push(k.map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// Splits text at each `-----BEGIN PGP` line.
fn armor_blocks(text: &[u8]) -> Vec<&[u8]> {
    let marker = b"-----BEGIN PGP";
    let mut starts: Vec<usize> = text
        .windows(marker.len())
        .enumerate()
        .filter(|(i, w)| *w == marker && (*i == 0 || text[i - 1] == b'\n'))
        .map(|(i, _)| i)
        .collect();
    starts.push(text.len());
    starts.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

/// The public part of a parsed key.
pub fn public_of(k: &ParsedKey) -> SignedPublicKey {
    match k {
        PublicOrSecret::Public(p) => p.clone(),
        PublicOrSecret::Secret(s) => s.to_public_key(),
    }
}

/// The 20-byte v4 fingerprint of a key's primary key (`None` for other key versions).
pub fn fingerprint_of(key: &impl KeyDetails) -> Option<[u8; FINGERPRINT_LEN]> {
    key.fingerprint().as_bytes().try_into().ok()
}

/// Upper-case hex of a fingerprint, as Apptainer prints it.
pub fn fingerprint_hex(fp: &[u8]) -> String {
    hex::encode_upper(fp)
}

/// The primary user ID (the one flagged primary, else the first), as text.
pub fn primary_user_id(details: &pgp::composed::SignedKeyDetails) -> String {
    let users = &details.users;
    users
        .iter()
        .find(|u| u.is_primary())
        .or_else(|| users.first())
        .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
        .unwrap_or_default()
}

/// Facts shown by `key list` and when choosing a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub user_ids: Vec<String>,
    pub fingerprint: String,
    pub created: u32,
    pub bits: u32,
    pub encrypted: bool,
}

/// Listing facts for a public key.
pub fn public_info(k: &SignedPublicKey) -> KeyInfo {
    KeyInfo {
        user_ids: user_ids(&k.details),
        fingerprint: fingerprint_hex(k.fingerprint().as_bytes()),
        created: k.primary_key.created_at().as_secs(),
        bits: key_bits(k.primary_key.public_params()),
        encrypted: false,
    }
}

/// Listing facts for a secret key.
pub fn secret_info(k: &SignedSecretKey) -> KeyInfo {
    KeyInfo {
        user_ids: user_ids(&k.details),
        fingerprint: fingerprint_hex(k.fingerprint().as_bytes()),
        created: k.primary_key.created_at().as_secs(),
        bits: key_bits(k.primary_key.public_params()),
        encrypted: k.primary_key.secret_params().is_encrypted(),
    }
}

fn user_ids(details: &pgp::composed::SignedKeyDetails) -> Vec<String> {
    details
        .users
        .iter()
        .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
        .collect()
}

/// The key size in bits (the modulus for RSA, the curve size otherwise).
pub fn key_bits(p: &PublicParams) -> u32 {
    use pgp::types::EcdsaPublicParams;
    use rsa::traits::PublicKeyParts;
    match p {
        PublicParams::RSA(r) => u32::try_from(r.key.n().bits()).unwrap_or(0),
        PublicParams::ECDSA(EcdsaPublicParams::P384 { .. }) => 384,
        PublicParams::ECDSA(EcdsaPublicParams::P521 { .. }) => 521,
        PublicParams::Ed448(_) | PublicParams::X448(_) => 448,
        _ => 256,
    }
}

/// The algorithm of a new key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeyType {
    /// RSA with this many bits (2048 to 4096).
    Rsa(u32),
    /// Ed25519 in the v4 "EdDSA legacy" form that go-crypto and gpg 2.2 read.
    Ed25519,
}

/// Generates a signing key pair for `user_id`, locked with `password` when it is not empty.
pub fn generate_key(
    user_id: &str,
    kind: NewKeyType,
    password: &str,
) -> Result<SignedSecretKey, String> {
    let key_type = match kind {
        NewKeyType::Rsa(bits) => {
            if !(2048..=4096).contains(&bits) {
                return Err(format!("RSA keys must have 2048 to 4096 bits, not {bits}"));
            }
            KeyType::Rsa(bits)
        }
        NewKeyType::Ed25519 => KeyType::Ed25519Legacy,
    };
    let params = SecretKeyParamsBuilder::default()
        .version(KeyVersion::V4)
        .key_type(key_type)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(user_id.to_string())
        .preferred_hash_algorithms(
            [
                HashAlgorithm::Sha256,
                HashAlgorithm::Sha384,
                HashAlgorithm::Sha512,
            ]
            .into_iter()
            .collect(),
        )
        .passphrase((!password.is_empty()).then(|| password.to_string()))
        .build()
        .map_err(|e| e.to_string())?;
    params
        .generate(rand::rngs::OsRng)
        .map_err(|e| e.to_string())
}

/// True when the secret key's primary key is password-locked.
pub fn is_locked(k: &SignedSecretKey) -> bool {
    k.primary_key.secret_params().is_encrypted()
}

/// Checks `password` against a locked key; `Ok` for unlocked keys.
pub fn check_password(k: &SignedSecretKey, password: &Password) -> Result<(), String> {
    match k.primary_key.unlock(password, |_, _| Ok(())) {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "wrong password for key {}",
            fingerprint_hex(k.fingerprint().as_bytes())
        )),
    }
}

/// Serializes keys as binary packets (what the keyring files hold).
pub fn to_binary<K: pgp::ser::Serialize>(keys: &[K]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for k in keys {
        k.to_writer(&mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Clear-signs `text` with the primary key of `key`: a v4 text signature with SHA-256,
/// creation time, issuer fingerprint (hashed) and issuer key ID (unhashed), like go-crypto.
/// Returns the armored message without a trailing newline, as the reference writes it.
pub fn clearsign(
    text: &str,
    key: &SignedSecretKey,
    password: &Password,
) -> Result<Vec<u8>, String> {
    let trimmed = trim_line_ends(text);
    let mut config = SignatureConfig::v4(
        SignatureType::Text,
        key.primary_key.algorithm(),
        HashAlgorithm::Sha256,
    );
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::now()))
            .map_err(|e| e.to_string())?,
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))
            .map_err(|e| e.to_string())?,
    ];
    config.unhashed_subpackets = vec![
        Subpacket::regular(SubpacketData::IssuerKeyId(key.legacy_key_id()))
            .map_err(|e| e.to_string())?,
    ];
    let msg = CleartextSignedMessage::new(&trimmed, config, &key.primary_key, password)
        .map_err(|e| e.to_string())?;
    let mut out = msg
        .to_armored_bytes(ArmorOptions::default())
        .map_err(|e| e.to_string())?;
    while out.last() == Some(&b'\n') {
        out.pop();
    }
    Ok(out)
}

/// Removes trailing spaces and tabs from every line (RFC 4880 §7.1; see the module note).
fn trim_line_ends(text: &str) -> String {
    text.split('\n')
        .map(|l| l.trim_end_matches([' ', '\t']))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A decoded clear-signed message.
#[derive(Debug, Clone)]
pub struct Cleartext {
    msg: CleartextSignedMessage,
    /// The signed text, dash-unescaped, with `\n` line ends.
    pub plaintext: String,
}

/// Decodes a clear-signed message starting anywhere in `data` (the reference skips leading
/// bytes); `None` when there is none.
pub fn decode_clearsign(data: &[u8]) -> Option<Cleartext> {
    let start = data
        .windows(CLEARSIGN_BEGIN.len())
        .position(|w| w == CLEARSIGN_BEGIN)?;
    let (msg, _) = CleartextSignedMessage::from_armor(&data[start..]).ok()?;
    let plaintext = msg.signed_text().replace("\r\n", "\n");
    Some(Cleartext { msg, plaintext })
}

/// Who made a verified signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgpSigner {
    /// The primary key's fingerprint (what SIF descriptors store).
    pub fingerprint: [u8; FINGERPRINT_LEN],
    /// The primary user ID.
    pub user_id: String,
    /// Which keyring held the key.
    pub source: KeySource,
}

/// Public keys usable to verify, each tagged with its keyring.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<(SignedPublicKey, KeySource)>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Adds a key.
    pub fn add(&mut self, key: SignedPublicKey, source: KeySource) {
        self.entries.push((key, source));
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when the keyring from `source` holds the key with primary fingerprint `fp`.
    pub fn has(&self, fp: &[u8], source: KeySource) -> bool {
        self.entries
            .iter()
            .any(|(k, s)| *s == source && k.fingerprint().as_bytes() == fp)
    }

    /// Where the key with primary fingerprint `fp` is, the global keyring first (as
    /// Apptainer reports `[GLOBAL]` before `[LOCAL]`).
    pub fn source_of(&self, fp: &[u8]) -> Option<KeySource> {
        [KeySource::Global, KeySource::Local, KeySource::Remote]
            .into_iter()
            .find(|&s| self.has(fp, s))
    }

    /// Verifies a clear-signed message the way go-crypto's `CheckDetachedSignatureAndHash`
    /// does: the first signature whose issuer is in the keyring (primary key or a bound
    /// signing subkey) must verify with it, using SHA-224/256/384/512. Returns the signer's
    /// primary key facts, or the reason it does not verify.
    pub fn verify(&self, ct: &Cleartext) -> Result<PgpSigner, String> {
        let text = ct.msg.signed_text();
        let mut issuers = Vec::new();
        for sig in ct.msg.signatures() {
            let mut ids: Vec<[u8; 8]> = sig
                .issuer_key_id()
                .into_iter()
                .filter_map(|k| k.as_ref().try_into().ok())
                .collect();
            for fp in sig.issuer_fingerprint() {
                let b = fp.as_bytes();
                if b.len() == FINGERPRINT_LEN
                    && let Ok(id) = b[12..].try_into()
                {
                    ids.push(id);
                }
            }
            issuers.extend(ids.iter().map(hex::encode_upper));
            let candidates = self.candidates(&ids);
            if candidates.is_empty() {
                continue;
            }
            match sig.hash_alg() {
                Some(
                    HashAlgorithm::Sha224
                    | HashAlgorithm::Sha256
                    | HashAlgorithm::Sha384
                    | HashAlgorithm::Sha512,
                ) => {}
                other => {
                    return Err(format!(
                        "openpgp: hash algorithm {other:?} is not allowed (SHA-224/256/384/512 only)"
                    ));
                }
            }
            let mut last = String::new();
            for (primary, verifier, source) in candidates {
                match verifier.verify(sig, text.as_bytes()) {
                    Ok(()) => {
                        let fingerprint = fingerprint_of(primary).ok_or_else(|| {
                            "openpgp: the signing key is not a version 4 key".to_string()
                        })?;
                        return Ok(PgpSigner {
                            fingerprint,
                            user_id: primary_user_id(&primary.details),
                            source,
                        });
                    }
                    Err(e) => last = e,
                }
            }
            return Err(format!("openpgp: invalid signature: {last}"));
        }
        issuers.dedup();
        let Some(first) = issuers.first() else {
            return Err(
                "openpgp: signature made by unknown entity (no issuer recorded); import the signer's public key with 'key import'"
                    .into(),
            );
        };
        Err(format!(
            "openpgp: signature made by unknown entity (key ID {}), not in the local or global keyring; fetch it with 'key pull --url URL {first}' or verify with --url URL",
            issuers.join(", ")
        ))
    }

    /// Keys whose key ID is one of `ids`: primary keys, and subkeys whose binding to their
    /// primary verifies and allows signing.
    fn candidates(&self, ids: &[[u8; 8]]) -> Vec<(&SignedPublicKey, Verifier<'_>, KeySource)> {
        let mut out = Vec::new();
        let has = |k: &dyn Fn() -> [u8; 8]| ids.contains(&k());
        // Global keys first, so a key in both keyrings is reported as global.
        for src in [KeySource::Global, KeySource::Local, KeySource::Remote] {
            for (k, s) in self.entries.iter().filter(|(_, s)| *s == src) {
                if has(&|| key_id8(k.primary_key.legacy_key_id().as_ref())) {
                    out.push((k, Verifier::Primary(&k.primary_key), *s));
                }
                for sub in &k.public_subkeys {
                    if has(&|| key_id8(sub.key.legacy_key_id().as_ref()))
                        && sub.verify_bindings(&k.primary_key).is_ok()
                        && sub.signatures.iter().any(|b| b.key_flags().sign())
                    {
                        out.push((k, Verifier::Subkey(&sub.key), *s));
                    }
                }
            }
        }
        out
    }
}

fn key_id8(b: &[u8]) -> [u8; 8] {
    b.try_into().unwrap_or([0; 8])
}

/// The key a signature is checked with.
enum Verifier<'a> {
    Primary(&'a pgp::packet::PublicKey),
    Subkey(&'a pgp::packet::PublicSubkey),
}

impl Verifier<'_> {
    fn verify(&self, sig: &pgp::packet::Signature, text: &[u8]) -> Result<(), String> {
        match self {
            Verifier::Primary(k) => sig.verify(*k, text),
            Verifier::Subkey(k) => sig.verify(*k, text),
        }
        .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    pub(crate) fn testdata() -> PathBuf {
        crate::testutil::testdata()
    }

    pub(crate) fn read_fixture(rel: &str) -> Option<Vec<u8>> {
        std::fs::read(testdata().join("sif").join(rel)).ok()
    }

    pub(crate) const PGP_S: &str = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84";
    pub(crate) const PGP_A: &str = "F34371D0ACD5D09EB9BD853A80600A5FA11BBD29";

    fn keyring_of(rel: &str, source: KeySource) -> Option<Keyring> {
        let bytes = read_fixture(rel)?;
        let mut kr = Keyring::new();
        for k in parse_keys(&bytes).expect("parses") {
            kr.add(public_of(&k), source);
        }
        Some(kr)
    }

    /// The signature object data of `image`'s object `id`.
    fn sig_data(image: &str, id: u32) -> Option<Vec<u8>> {
        let img = crate::image::sif::SifImage::open(testdata().join("sif").join(image)).ok()?;
        let d = img.object(id).ok()?;
        img.read_object(d, 1 << 20).ok()
    }

    #[test]
    fn test_parse_fixture_keys() {
        let Some(bytes) = read_fixture("keys/private.asc") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys = parse_keys(&bytes).expect("parses");
        assert_eq!(keys.len(), 1);
        let PublicOrSecret::Secret(s) = &keys[0] else {
            panic!("a secret key")
        };
        let info = secret_info(s);
        assert_eq!(info.fingerprint, PGP_S);
        assert_eq!(info.user_ids, ["Unit Test <unit@test.com>"]);
        assert_eq!(info.bits, 2048);
        assert!(!info.encrypted);
        // Binary form round-trips.
        let bin = to_binary(std::slice::from_ref(s)).expect("binary");
        let again = parse_keys(&bin).expect("parses");
        assert!(matches!(&again[0], PublicOrSecret::Secret(k) if k == s));
        assert!(parse_keys(b"").expect("empty").is_empty());
        assert!(parse_keys(b"  \n").expect("blank").is_empty());
        assert!(parse_keys(b"garbage").is_err());
        assert!(parse_keys(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx\n").is_err());
    }

    #[test]
    fn test_verify_go_made_clearsign() {
        let (Some(kr), Some(data)) = (
            keyring_of("keys/private.asc", KeySource::Local),
            sig_data("one-group-signed-pgp.sif", 3),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let ct = decode_clearsign(&data).expect("clearsign");
        assert!(ct.plaintext.starts_with("{\"version\":1,"));
        let signer = kr.verify(&ct).expect("verifies");
        assert_eq!(fingerprint_hex(&signer.fingerprint), PGP_S);
        assert_eq!(signer.user_id, "Unit Test <unit@test.com>");
        assert_eq!(signer.source, KeySource::Local);
        assert_eq!(kr.source_of(&signer.fingerprint), Some(KeySource::Local));

        // The wrong key: unknown entity, naming the issuer.
        let other =
            keyring_of("apptainer/keys/pgp-public.asc", KeySource::Global).expect("fixture");
        assert!(other.source_of(&hex::decode(PGP_A).expect("hex")).is_some());
        let err = other.verify(&ct).expect_err("unknown key");
        assert!(
            err.contains("unknown entity") && err.contains("A20C27EE7FF7BA84"),
            "{err}"
        );
        assert!(Keyring::new().verify(&ct).is_err());
    }

    #[test]
    fn test_legacy_plaintext() {
        let Some(data) = sig_data("one-group-signed-legacy.sif", 3) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let ct = decode_clearsign(&data).expect("clearsign");
        assert!(ct.plaintext.starts_with("SIFHASH:\n"), "{:?}", ct.plaintext);
        assert_eq!(ct.plaintext.len(), "SIFHASH:\n".len() + 96);
        assert!(decode_clearsign(b"{}").is_none());
        assert!(decode_clearsign(b"-----BEGIN PGP SIGNED MESSAGE-----\ngarbage").is_none());
    }

    #[test]
    fn test_sign_and_verify_round_trip_ed25519_with_password() {
        let key = generate_key("Round Trip <rt@example.com>", NewKeyType::Ed25519, "pw")
            .expect("generate");
        assert!(is_locked(&key));
        check_password(&key, &Password::from("pw")).expect("right password");
        assert!(check_password(&key, &Password::from("nope")).is_err());
        // Trailing whitespace is trimmed before signing, so the result verifies.
        let signed = clearsign("{\"a\":1}  \nsecond\t", &key, &Password::from("pw")).expect("sign");
        assert!(!signed.ends_with(b"\n"));
        let ct = decode_clearsign(&signed).expect("decode");
        assert_eq!(ct.plaintext, "{\"a\":1}\nsecond");
        let mut kr = Keyring::new();
        kr.add(key.to_public_key(), KeySource::Global);
        let signer = kr.verify(&ct).expect("verifies");
        assert_eq!(signer.source, KeySource::Global);
        assert_eq!(signer.user_id, "Round Trip <rt@example.com>");
        assert!(clearsign("x", &key, &Password::from("bad")).is_err());

        // A tampered text does not verify.
        let text = String::from_utf8(signed)
            .expect("utf-8")
            .replace("\"a\":1", "\"a\":2");
        let ct = decode_clearsign(text.as_bytes()).expect("decode");
        let err = kr.verify(&ct).expect_err("tampered");
        assert!(err.starts_with("openpgp: invalid signature"), "{err}");
    }

    #[test]
    fn test_generate_refuses_bad_rsa_sizes() {
        assert!(generate_key("x", NewKeyType::Rsa(1024), "").is_err());
        assert!(generate_key("x", NewKeyType::Rsa(8192), "").is_err());
    }

    #[test]
    fn test_armor_blocks_split() {
        let a = b"-----BEGIN PGP A-----\nx\n-----END-----\n-----BEGIN PGP B-----\ny\n";
        let blocks = armor_blocks(a);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[1].starts_with(b"-----BEGIN PGP B"));
    }
}
