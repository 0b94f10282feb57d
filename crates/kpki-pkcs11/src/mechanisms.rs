//! What a token can do, checked before anything is created: the key-pair generation
//! mechanism (`C_GetMechanismList`), its key-size range and generate flag
//! (`C_GetMechanismInfo`), and a signing mechanism kpki can use with the key.

use cryptoki::mechanism::MechanismType;
use kpki_signer::{KeyAlgorithm, KeyError};

use crate::token::TokenView;

/// What `C_GetMechanismInfo` says about the generation mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GenInfo {
    /// `ulMinKeySize`.
    pub(crate) min: usize,
    /// `ulMaxKeySize`.
    pub(crate) max: usize,
    /// `CKF_GENERATE_KEY_PAIR` is set.
    pub(crate) generate_key_pair: bool,
}

/// The key-pair generation mechanism of an algorithm.
pub(crate) fn generation_mechanism(algorithm: KeyAlgorithm) -> MechanismType {
    if algorithm.rsa_bits().is_some() {
        MechanismType::RSA_PKCS_KEY_PAIR_GEN
    } else {
        MechanismType::ECC_KEY_PAIR_GEN
    }
}

/// Key size in the unit PKCS#11 states ranges in: RSA modulus bits, EC field bits.
fn key_bits(algorithm: KeyAlgorithm) -> usize {
    match algorithm.rsa_bits() {
        Some(bits) => bits,
        None => algorithm.ec_scalar_len().map(|n| n * 8).unwrap_or(0),
    }
}

/// The signing mechanisms kpki can use for an algorithm, best first.
fn signing_mechanisms(algorithm: KeyAlgorithm) -> &'static [MechanismType] {
    match algorithm {
        KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => {
            &[MechanismType::SHA256_RSA_PKCS, MechanismType::RSA_PKCS]
        }
        KeyAlgorithm::EcdsaP256 => &[MechanismType::ECDSA_SHA256, MechanismType::ECDSA],
        KeyAlgorithm::EcdsaP384 => &[MechanismType::ECDSA_SHA384, MechanismType::ECDSA],
    }
}

/// Why a token with `listed` mechanisms (and `info` for the generation mechanism) cannot
/// make and use `algorithm` keys, or `None` when it can.
pub(crate) fn refusal(
    algorithm: KeyAlgorithm,
    listed: &[MechanismType],
    info: Option<GenInfo>,
) -> Option<String> {
    let gen_mech = generation_mechanism(algorithm);
    if !listed.contains(&gen_mech) {
        return Some(format!("it lists no {gen_mech} (C_GetMechanismList)"));
    }
    if let Some(info) = info {
        if !info.generate_key_pair {
            return Some(format!(
                "{gen_mech} is listed without CKF_GENERATE_KEY_PAIR (C_GetMechanismInfo)"
            ));
        }
        let bits = key_bits(algorithm);
        // Ranges are in bits (PKCS#11 2.40+); some tokens state EC sizes in bytes or leave
        // them 0: only ranges that are plausibly bits are enforced.
        let plausible = info.max >= 160 && info.min <= info.max;
        if plausible && (bits < info.min || bits > info.max) {
            return Some(format!(
                "{gen_mech} supports {}–{}-bit keys, not {bits} (C_GetMechanismInfo)",
                info.min, info.max
            ));
        }
    }
    let signing = signing_mechanisms(algorithm);
    if !signing.iter().any(|m| listed.contains(m)) {
        let names: Vec<String> = signing.iter().map(ToString::to_string).collect();
        return Some(format!(
            "it lists no signing mechanism kpki can use ({})",
            names.join(" or ")
        ));
    }
    None
}

/// Refuses, in one line naming the token, the algorithm and the missing mechanism or range,
/// when the connected token cannot make `algorithm` keys.
pub(crate) fn check_generate(
    view: &TokenView,
    token: &str,
    algorithm: KeyAlgorithm,
) -> Result<(), KeyError> {
    let gen_mech = generation_mechanism(algorithm);
    let info = if view.mechanisms.contains(&gen_mech) {
        view.module
            .ctx
            .get_mechanism_info(view.slot, gen_mech)
            .ok()
            .map(|i| GenInfo {
                min: i.min_key_size(),
                max: i.max_key_size(),
                generate_key_pair: i.generate_key_pair(),
            })
    } else {
        None
    };
    match refusal(algorithm, &view.mechanisms, info) {
        None => Ok(()),
        Some(why) => Err(KeyError::Unsupported(format!(
            "token {token:?} ({}) cannot create {algorithm} keys: {why}",
            describe_token(view)
        ))),
    }
}

/// `IBM SoftTok by IBM Corp.`-style description of the token model.
pub(crate) fn describe_token(view: &TokenView) -> String {
    match (view.info.model.as_str(), view.info.manufacturer.as_str()) {
        ("", "") => view.module.library.description.clone(),
        (model, "") => model.to_string(),
        ("", maker) => maker.to_string(),
        (model, maker) => format!("{model} by {maker}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_ONLY: &[MechanismType] = &[
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        MechanismType::RSA_PKCS,
    ];
    const FULL: &[MechanismType] = &[
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        MechanismType::SHA256_RSA_PKCS,
        MechanismType::ECC_KEY_PAIR_GEN,
        MechanismType::ECDSA,
    ];

    fn range(min: usize, max: usize) -> Option<GenInfo> {
        Some(GenInfo {
            min,
            max,
            generate_key_pair: true,
        })
    }

    /// (algorithm, mechanisms listed, generation info, expected text or None)
    type Case = (
        KeyAlgorithm,
        &'static [MechanismType],
        Option<GenInfo>,
        Option<&'static str>,
    );

    #[test]
    fn refusals_name_the_mechanism_or_range() {
        // (algorithm, mechanisms listed, generation info, expected text or None)
        let table: [Case; 11] = [
            // openCryptoki soft token: no EC at all.
            (
                KeyAlgorithm::EcdsaP256,
                RSA_ONLY,
                None,
                Some("it lists no CKM_EC_KEY_PAIR_GEN (C_GetMechanismList)"),
            ),
            (
                KeyAlgorithm::EcdsaP384,
                RSA_ONLY,
                None,
                Some("CKM_EC_KEY_PAIR_GEN"),
            ),
            (KeyAlgorithm::Rsa2048, RSA_ONLY, range(512, 4096), None),
            (KeyAlgorithm::Rsa4096, RSA_ONLY, range(512, 4096), None),
            // A TPM: 1024–3072.
            (
                KeyAlgorithm::Rsa4096,
                FULL,
                range(1024, 3072),
                Some(
                    "CKM_RSA_PKCS_KEY_PAIR_GEN supports 1024–3072-bit keys, not 4096 (C_GetMechanismInfo)",
                ),
            ),
            (KeyAlgorithm::Rsa3072, FULL, range(1024, 3072), None),
            (KeyAlgorithm::EcdsaP384, FULL, range(192, 638), None),
            (
                KeyAlgorithm::EcdsaP384,
                FULL,
                range(256, 256),
                Some("supports 256–256-bit keys, not 384"),
            ),
            // Ranges that are not plausibly bits are not enforced.
            (KeyAlgorithm::EcdsaP256, FULL, range(32, 66), None),
            (
                KeyAlgorithm::EcdsaP256,
                FULL,
                Some(GenInfo {
                    min: 256,
                    max: 521,
                    generate_key_pair: false,
                }),
                Some("without CKF_GENERATE_KEY_PAIR"),
            ),
            (
                KeyAlgorithm::EcdsaP256,
                &[MechanismType::ECC_KEY_PAIR_GEN],
                range(256, 521),
                Some("no signing mechanism kpki can use (CKM_ECDSA_SHA256 or CKM_ECDSA)"),
            ),
        ];
        for (alg, listed, info, want) in table {
            let got = refusal(alg, listed, info);
            match want {
                None => assert_eq!(got, None, "{alg}"),
                Some(text) => {
                    let got = got.unwrap_or_default();
                    assert!(got.contains(text), "{alg}: {got:?} lacks {text:?}");
                }
            }
        }
    }
}
