//! DSSE envelopes (spec §9.3): the JSON form of signatures made with PEM keys. Encoding as the
//! reference does, recognising an envelope, the pre-authentication encoding every signature
//! covers, and checking an envelope against a set of public keys with threshold 1.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::pem::{PrivateKey, PublicKey};

/// The payload type of SIF image metadata.
pub const PAYLOAD_TYPE: &str = "application/vnd.sylabs.sif-metadata+json";

/// `{"payloadType":…,"payload":…,"signatures":[…]}` in the reference's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// `DSSEv1 <len(type)> <type> <len(payload)> <payload>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Decodes base64 the way the DSSE library accepts it: standard or URL alphabet, padded or not.
fn b64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s.trim()).ok())
}

/// The envelope in `data`, when `data` is one (JSON with the SIF metadata payload type).
pub fn decode(data: &[u8]) -> Option<Envelope> {
    let env: Envelope = serde_json::from_slice(data).ok()?;
    (env.payload_type == PAYLOAD_TYPE).then_some(env)
}

/// Signs `payload` with `key`; returns the envelope JSON.
pub fn sign(payload: &[u8], key: &PrivateKey) -> Result<Vec<u8>, String> {
    let sig = key.sign(&pae(PAYLOAD_TYPE, payload))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let env = Envelope {
        payload_type: PAYLOAD_TYPE.to_string(),
        payload: b64.encode(payload),
        signatures: vec![EnvelopeSignature {
            keyid: key.public().key_id(),
            sig: b64.encode(sig),
        }],
    };
    serde_json::to_vec(&env).map_err(|e| e.to_string())
}

/// Checks that at least one of the envelope's signatures verifies with one of `keys`, and
/// returns the payload and the keys that verified.
pub fn verify<'k>(
    env: &Envelope,
    keys: &'k [PublicKey],
) -> Result<(Vec<u8>, Vec<&'k PublicKey>), String> {
    let payload = b64_decode(&env.payload).ok_or("dsse: payload is not valid base64")?;
    let message = pae(&env.payload_type, &payload);
    let mut accepted: Vec<&PublicKey> = Vec::new();
    for s in &env.signatures {
        let Some(sig) = b64_decode(&s.sig) else {
            continue;
        };
        for k in keys {
            if !accepted.contains(&k) && k.verify(&message, &sig) {
                accepted.push(k);
            }
        }
    }
    if accepted.is_empty() {
        return Err(format!(
            "dsse: verify envelope failed: Accepted signatures do not match threshold, Found: 0, Expected 1 (tried {} key(s) on {} signature(s))",
            keys.len(),
            env.signatures.len()
        ));
    }
    if env.payload_type != PAYLOAD_TYPE {
        return Err(format!(
            "unexpected DSSE payload type: {}",
            env.payload_type
        ));
    }
    Ok((payload, accepted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::pgp::tests::read_fixture;

    fn key(name: &str) -> Option<PublicKey> {
        PublicKey::from_pem(&read_fixture(&format!("keys/{name}-public.pem"))?).ok()
    }

    fn fixture_envelope(image: &str) -> Option<Envelope> {
        let path = crate::sign::pgp::tests::testdata().join("sif").join(image);
        let img = crate::image::sif::SifImage::open(path).ok()?;
        let d = img.object(3).ok()?;
        decode(&img.read_object(d, 1 << 20).ok()?)
    }

    #[test]
    fn test_pae() {
        assert_eq!(pae("t", b"hello"), b"DSSEv1 1 t 5 hello");
    }

    #[test]
    fn test_fixture_envelopes_verify_with_ed_or_rsa_not_ec() {
        for image in [
            "one-group-signed-dsse.sif",
            "apptainer/one-group-signed-dsse.sif",
        ] {
            let (Some(env), Some(ed), Some(rsa), Some(ec)) = (
                fixture_envelope(image),
                key("ed25519"),
                key("rsa"),
                key("ecdsa"),
            ) else {
                crate::testutil::skip("fixtures not found");
                return;
            };
            assert_eq!(env.signatures.len(), 2);
            let (payload, ok) = verify(&env, std::slice::from_ref(&ed)).expect("ed25519");
            assert!(payload.starts_with(b"{\"version\":1,"));
            assert_eq!(ok, [&ed]);
            verify(&env, std::slice::from_ref(&rsa)).expect("rsa");
            let err = verify(&env, std::slice::from_ref(&ec)).expect_err("ecdsa");
            assert!(err.contains("Found: 0, Expected 1"), "{err}");
            assert!(verify(&env, &[]).is_err());
        }
    }

    #[test]
    fn test_sign_round_trip_and_tamper() {
        let (Some(private), Some(public)) = (
            read_fixture("keys/ecdsa-private.pem").and_then(|b| PrivateKey::from_pem(&b).ok()),
            key("ecdsa"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let json = sign(b"{\"x\":1}", &private).expect("sign");
        let text = String::from_utf8(json.clone()).expect("utf-8");
        assert!(text.starts_with(&format!(
            "{{\"payloadType\":\"{PAYLOAD_TYPE}\",\"payload\":"
        )));
        let env = decode(&json).expect("envelope");
        assert_eq!(env.signatures[0].keyid, public.key_id());
        assert_eq!(
            verify(&env, std::slice::from_ref(&public)).expect("ok").0,
            b"{\"x\":1}"
        );
        let mut bad = env.clone();
        bad.payload = base64::engine::general_purpose::STANDARD.encode(b"{\"x\":2}");
        assert!(verify(&bad, &[public]).is_err());
        assert!(
            decode(b"{\"payloadType\":\"other\",\"payload\":\"\",\"signatures\":[]}").is_none()
        );
        assert!(decode(b"not json").is_none());
    }
}
