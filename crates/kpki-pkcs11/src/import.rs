//! Creating a key pair on a token from existing material (C_CreateObject): the private key
//! object is sensitive, non-extractable and sign-only, like a generated one; the token
//! itself records that it was not generated there (CKA_ALWAYS_SENSITIVE and
//! CKA_NEVER_EXTRACTABLE stay false). Secret attribute buffers are zeroized after use.

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use kpki_signer::{KeyError, KeyMaterial, Result};
use zeroize::{Zeroize, Zeroizing};

use crate::keygen;
use crate::mechanisms::describe_token;
use crate::token::TokenView;

/// How to import into a tpm2-pkcs11 token with its own tool.
const TPM2_IMPORT_HINT: &str = "import the key with the token's own tool instead: \
     tpm2_ptool import --label <token label> --key-label <object label> --userpin <PIN> \
     --algorithm rsa|ecc --privkey <key.pem>, then name it with pkcs11:token=…;object=…";

/// Refuses up front on a token whose module is known not to accept private keys through
/// `C_CreateObject`.
pub(crate) fn refusal(view: &TokenView, token: &str) -> Option<KeyError> {
    view.module.library.is_tpm2_pkcs11().then(|| {
        KeyError::Unsupported(format!(
            "token {token:?} ({}) does not take private keys through C_CreateObject \
             (tpm2-pkcs11 only wraps keys under the TPM with its own tool); {TPM2_IMPORT_HINT}",
            describe_token(view)
        ))
    })
}

/// The error for a token that refused the private-key object.
pub(crate) fn refused(view: &TokenView, token: &str, err: &cryptoki::error::Error) -> KeyError {
    KeyError::Unsupported(format!(
        "token {token:?} ({}) refused to create a private key from existing material \
         (C_CreateObject: {}); nothing was created. Some tokens only import keys with their \
         own tools (TPM 2.0 through tpm2-pkcs11: tpm2_ptool import)",
        describe_token(view),
        crate::errors::describe(err)
    ))
}

/// Public and private object templates for `material`.
pub(crate) fn templates(
    material: &KeyMaterial,
    label: &str,
    id: &[u8],
) -> Result<(Vec<Attribute>, Vec<Attribute>)> {
    let mut public = vec![Attribute::Class(ObjectClass::PUBLIC_KEY)];
    public.extend(keygen::public_base(label, id));
    let mut private = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
    private.extend(keygen::private_base(label, id));
    match material {
        KeyMaterial::Rsa { pkcs1_der, .. } => {
            let p = rsa_parts(pkcs1_der)?;
            public.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(p.n.to_vec()),
                Attribute::PublicExponent(p.e.to_vec()),
            ]);
            private.extend([
                Attribute::KeyType(KeyType::RSA),
                Attribute::Modulus(p.n.to_vec()),
                Attribute::PublicExponent(p.e.to_vec()),
                Attribute::PrivateExponent(p.d.to_vec()),
                Attribute::Prime1(p.p.to_vec()),
                Attribute::Prime2(p.q.to_vec()),
                Attribute::Exponent1(p.dp.to_vec()),
                Attribute::Exponent2(p.dq.to_vec()),
                Attribute::Coefficient(p.qinv.to_vec()),
            ]);
        }
        KeyMaterial::Ec {
            algorithm,
            scalar,
            point,
        } => {
            let params = algorithm
                .ec_params_der()
                .ok_or_else(|| KeyError::Unsupported(format!("{algorithm} is not an EC key")))?;
            // CKA_EC_POINT is the DER OCTET STRING of the uncompressed point.
            let point_der = yasna::construct_der(|w| w.write_bytes(point));
            public.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(params.to_vec()),
                Attribute::EcPoint(point_der),
            ]);
            private.extend([
                Attribute::KeyType(KeyType::EC),
                Attribute::EcParams(params.to_vec()),
                Attribute::Value(scalar.to_vec()),
            ]);
        }
    }
    Ok((public, private))
}

/// Zeroizes the secret values of a private key template.
pub(crate) fn wipe(template: &mut [Attribute]) {
    for a in template {
        match a {
            Attribute::PrivateExponent(v)
            | Attribute::Prime1(v)
            | Attribute::Prime2(v)
            | Attribute::Exponent1(v)
            | Attribute::Exponent2(v)
            | Attribute::Coefficient(v)
            | Attribute::Value(v) => v.zeroize(),
            _ => {}
        }
    }
}

/// The integers of a PKCS#1 RSAPrivateKey, unsigned big-endian without leading zeros.
struct RsaParts {
    n: Zeroizing<Vec<u8>>,
    e: Zeroizing<Vec<u8>>,
    d: Zeroizing<Vec<u8>>,
    p: Zeroizing<Vec<u8>>,
    q: Zeroizing<Vec<u8>>,
    dp: Zeroizing<Vec<u8>>,
    dq: Zeroizing<Vec<u8>>,
    qinv: Zeroizing<Vec<u8>>,
}

fn rsa_parts(pkcs1: &[u8]) -> Result<RsaParts> {
    let bad = || KeyError::Crypto("RSA PRIVATE KEY is not a two-prime PKCS#1 key".into());
    let unsigned = |r: yasna::BERReader<'_, '_>| -> yasna::ASN1Result<Zeroizing<Vec<u8>>> {
        let (bytes, nonnegative) = r.read_bigint_bytes()?;
        let mut bytes = Zeroizing::new(bytes);
        if !nonnegative {
            return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
        }
        let zeros = bytes.iter().take_while(|b| **b == 0).count();
        let keep_one = zeros.min(bytes.len().saturating_sub(1));
        bytes.drain(..keep_one);
        Ok(bytes)
    };
    yasna::parse_der(pkcs1, |r| {
        r.read_sequence(|r| {
            let version = r.next().read_u8()?;
            if version != 0 {
                return Err(yasna::ASN1Error::new(yasna::ASN1ErrorKind::Invalid));
            }
            Ok(RsaParts {
                n: unsigned(r.next())?,
                e: unsigned(r.next())?,
                d: unsigned(r.next())?,
                p: unsigned(r.next())?,
                q: unsigned(r.next())?,
                dp: unsigned(r.next())?,
                dq: unsigned(r.next())?,
                qinv: unsigned(r.next())?,
            })
        })
    })
    .map_err(|_| bad())
}
