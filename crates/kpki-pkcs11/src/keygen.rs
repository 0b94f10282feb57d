//! Key pair templates: generated on the token, private half sensitive, never extractable,
//! sign-only, with every other usage explicitly false (defaults differ between tokens).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use kpki_signer::KeyAlgorithm;

/// Attributes every public key object of kpki carries: on the token, public, verify-only.
pub(crate) fn public_base(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::VerifyRecover(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// Attributes every private key object of kpki carries: on the token, private, sensitive,
/// never extractable, sign-only.
pub(crate) fn private_base(label: &str, id: &[u8]) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::SignRecover(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ]
}

/// The mechanism and the public and private templates for a new key pair.
pub(crate) fn templates(
    algorithm: KeyAlgorithm,
    label: &str,
    id: &[u8],
) -> (Mechanism<'static>, Vec<Attribute>, Vec<Attribute>) {
    let mut public = public_base(label, id);
    let private = private_base(label, id);
    let mechanism = match (algorithm.rsa_bits(), algorithm.ec_params_der()) {
        (Some(bits), _) => {
            public.push(Attribute::ModulusBits((bits as u64).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
        (None, Some(params)) => {
            public.push(Attribute::EcParams(params.to_vec()));
            Mechanism::EccKeyPairGen
        }
        (None, None) => unreachable!("every KeyAlgorithm is RSA or EC"),
    };
    (mechanism, public, private)
}
