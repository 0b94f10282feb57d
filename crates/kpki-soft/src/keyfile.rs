//! PEM key file format and file checks: kubeadm's PKCS#1/SEC1 on write, PKCS#1, SEC1 and
//! PKCS#8 on read; refusal of files others can read or (as root) a non-root owner.

use std::fs;
use std::path::Path;

use kpki_signer::{KeyError, Result};
use zeroize::Zeroizing;

/// PEM block type of a PKCS#1 RSA private key.
pub(crate) const PEM_RSA: &str = "RSA PRIVATE KEY";
/// PEM block type of a SEC1 EC private key.
pub(crate) const PEM_EC: &str = "EC PRIVATE KEY";
/// PEM block type of a PKCS#8 private key.
pub(crate) const PEM_PKCS8: &str = "PRIVATE KEY";

/// The DER encoding a private key PEM block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyEncoding {
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1,
    /// SEC1 / RFC 5915 `ECPrivateKey`.
    Sec1,
    /// PKCS#8 `PrivateKeyInfo`.
    Pkcs8,
}

/// Encodes a private key DER as PEM with LF line endings, in a zeroizing buffer.
pub(crate) fn encode_private_key_pem(encoding: KeyEncoding, der: &[u8]) -> Zeroizing<String> {
    let tag = match encoding {
        KeyEncoding::Pkcs1 => PEM_RSA,
        KeyEncoding::Sec1 => PEM_EC,
        KeyEncoding::Pkcs8 => PEM_PKCS8,
    };
    let block = pem::Pem::new(tag, der.to_vec());
    let text = pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    );
    let mut contents = block.into_contents();
    zeroize::Zeroize::zeroize(&mut contents);
    Zeroizing::new(text)
}

/// Decodes the single private key block of a PEM file. `path` is only used in messages.
pub(crate) fn decode_private_key_pem(
    path: &Path,
    text: &str,
) -> Result<(KeyEncoding, Zeroizing<Vec<u8>>)> {
    let block = pem::parse(text.as_bytes())
        .map_err(|e| KeyError::key_file(path, format!("not a PEM private key ({e})")))?;
    let encoding = match block.tag() {
        PEM_RSA => KeyEncoding::Pkcs1,
        PEM_EC => KeyEncoding::Sec1,
        PEM_PKCS8 => KeyEncoding::Pkcs8,
        "ENCRYPTED PRIVATE KEY" => {
            return Err(KeyError::key_file(
                path,
                "encrypted private keys are not supported; decrypt it with openssl pkey first",
            ));
        }
        other => {
            return Err(KeyError::key_file(
                path,
                format!(
                    "PEM block is {other:?}, not a private key (RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)"
                ),
            ));
        }
    };
    Ok((encoding, Zeroizing::new(block.into_contents())))
}

/// Extracts the PKCS#1 `RSAPrivateKey` from a PKCS#8 v1 `PrivateKeyInfo`.
pub(crate) fn pkcs8_to_pkcs1(pkcs8: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    yasna::parse_der(pkcs8, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let _algorithm = r.next().read_der()?;
            r.next().read_bytes()
        })
    })
    .map(Zeroizing::new)
    .map_err(|e| KeyError::Crypto(format!("PKCS#8 to PKCS#1: {e}")))
}

/// Refuses a key file others can read or write, or (when running as root) one not owned by root.
pub fn check_key_file_permissions(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| KeyError::io(path, e))?;
    if !meta.is_file() {
        return Err(KeyError::key_file(path, "not a regular file"));
    }
    match kpki_atomic::read::secret_file_problem(path, &meta, kpki_atomic::read::Readers::Owner) {
        Some(problem) => Err(KeyError::key_file(path, problem)),
        None => Ok(()),
    }
}
