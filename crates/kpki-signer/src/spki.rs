//! SubjectPublicKeyInfo and signature encodings: building an SPKI from raw key parts,
//! reading its algorithm, fingerprints, ECDSA r‖s ↔ DER, and signature verification.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey};
use x509_parser::asn1_rs::ToDer;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::{KeyAlgorithm, KeyError, Result};

const OID_RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];

fn parse(spki: &[u8]) -> Result<SubjectPublicKeyInfo<'_>> {
    let (rest, info) = SubjectPublicKeyInfo::from_der(spki).map_err(|e| {
        KeyError::Unsupported(format!(
            "public key is not a valid SubjectPublicKeyInfo: {e}"
        ))
    })?;
    if !rest.is_empty() {
        return Err(KeyError::Unsupported(
            "trailing bytes after SubjectPublicKeyInfo".into(),
        ));
    }
    Ok(info)
}

/// The algorithm of a SubjectPublicKeyInfo, if it is one kpki supports.
pub fn algorithm_of(spki: &[u8]) -> Result<KeyAlgorithm> {
    let info = parse(spki)?;
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = rsa.key_size();
            KeyAlgorithm::from_rsa_bits(bits).ok_or_else(|| {
                KeyError::Unsupported(format!(
                    "RSA-{bits} (kpki supports RSA-2048, RSA-3072, RSA-4096)"
                ))
            })
        }
        Ok(PublicKey::EC(_)) => {
            let params = info
                .algorithm
                .parameters
                .as_ref()
                .map(|p| p.to_der_vec())
                .transpose()
                .map_err(|e| KeyError::Unsupported(format!("EC parameters: {e}")))?
                .unwrap_or_default();
            KeyAlgorithm::from_ec_params_der(&params).ok_or_else(|| {
                KeyError::Unsupported("EC key on a curve other than P-256 or P-384".into())
            })
        }
        Ok(other) => Err(KeyError::Unsupported(format!(
            "{} public key",
            kind_name(&other)
        ))),
        Err(e) => Err(KeyError::Unsupported(format!("public key: {e}"))),
    }
}

fn kind_name(k: &PublicKey<'_>) -> &'static str {
    match k {
        PublicKey::RSA(_) => "RSA",
        PublicKey::EC(_) => "EC",
        PublicKey::DSA(_) => "DSA",
        PublicKey::GostR3410(_) | PublicKey::GostR3410_2012(_) => "GOST",
        PublicKey::Unknown(_) => "unknown (e.g. Ed25519)",
    }
}

/// The contents of the SPKI's `subjectPublicKey` BIT STRING (PKCS#1 `RSAPublicKey` DER
/// for RSA, the uncompressed point for EC).
pub fn subject_public_key(spki: &[u8]) -> Result<Vec<u8>> {
    Ok(parse(spki)?.subject_public_key.data.to_vec())
}

/// Lower-case hex SHA-256 of the SPKI DER (what `openssl pkey -pubin -outform der | sha256sum` prints).
pub fn sha256_hex(spki: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, spki))
}

/// Builds an RSA SubjectPublicKeyInfo from the big-endian modulus and public exponent.
pub fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let rsa_public_key = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(modulus, true);
            w.next().write_bigint_bytes(exponent, true);
        })
    });
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                        OID_RSA_ENCRYPTION,
                    ));
                w.next().write_null();
            });
            w.next()
                .write_bitvec_bytes(&rsa_public_key, rsa_public_key.len() * 8);
        })
    })
}

/// Builds an EC SubjectPublicKeyInfo from the curve and the uncompressed point.
pub fn ec_spki(algorithm: KeyAlgorithm, point: &[u8]) -> Result<Vec<u8>> {
    let params = algorithm
        .ec_params_der()
        .ok_or_else(|| KeyError::Unsupported(format!("{algorithm} is not an EC algorithm")))?;
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(
                        OID_EC_PUBLIC_KEY,
                    ));
                w.next().write_der(params);
            });
            w.next().write_bitvec_bytes(point, point.len() * 8);
        })
    }))
}

/// Converts a raw ECDSA signature `r‖s` (as PKCS#11 and JWS carry it) to DER `Ecdsa-Sig-Value`.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(KeyError::Crypto(format!(
            "ECDSA signature of odd length {}",
            raw.len()
        )));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(r, true);
            w.next().write_bigint_bytes(s, true);
        })
    }))
}

/// Converts a DER `Ecdsa-Sig-Value` to raw `r‖s` with each scalar `scalar_len` bytes (JWS form).
pub fn ecdsa_der_to_raw(der: &[u8], scalar_len: usize) -> Result<Vec<u8>> {
    let (r, s) = yasna::parse_der(der, |rd| {
        rd.read_sequence(|rd| {
            let r = rd.next().read_bigint_bytes()?;
            let s = rd.next().read_bigint_bytes()?;
            Ok((r.0, s.0))
        })
    })
    .map_err(|e| KeyError::Crypto(format!("ECDSA signature is not DER: {e}")))?;
    let mut out = vec![0u8; scalar_len * 2];
    for (i, v) in [r, s].iter().enumerate() {
        let v = strip_leading_zeros(v);
        if v.len() > scalar_len {
            return Err(KeyError::Crypto(
                "ECDSA scalar longer than the curve".into(),
            ));
        }
        let end = (i + 1) * scalar_len;
        out[end - v.len()..end].copy_from_slice(v);
    }
    Ok(out)
}

fn strip_leading_zeros(v: &[u8]) -> &[u8] {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[first..]
}

/// Verifies an X.509-form signature (see [`crate::Signer::sign`]) made by the key `spki`.
pub fn verify(spki: &[u8], message: &[u8], signature_der: &[u8]) -> Result<()> {
    let algorithm = algorithm_of(spki)?;
    let key = subject_public_key(spki)?;
    let verify_alg: &'static dyn signature::VerificationAlgorithm = match algorithm {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        KeyAlgorithm::EcdsaP256 => &signature::ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcdsaP384 => &signature::ECDSA_P384_SHA384_ASN1,
    };
    UnparsedPublicKey::new(verify_alg, key)
        .verify(message, signature_der)
        .map_err(|_| KeyError::Crypto(format!("{algorithm} signature does not verify")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_raw_der_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // needs a leading zero in DER
        raw[40] = 0x01;
        let der = ecdsa_raw_to_der(&raw).expect("encodes");
        assert_eq!(ecdsa_der_to_raw(&der, 32).expect("decodes"), raw);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_err());
    }
}
