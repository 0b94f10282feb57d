//! Mapping cryptoki errors to [`KeyError`]s, and telling lost connections from refusals.

use cryptoki::error::{Error, RvError};
use kpki_signer::KeyError;

/// The PKCS#11 return value of an error, if it has one.
pub(crate) fn rv(err: &Error) -> Option<RvError> {
    match err {
        Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// True when the error means the session, login or token was lost: reconnecting may help.
pub(crate) fn is_connection_loss(err: &Error) -> bool {
    matches!(
        rv(err),
        Some(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::DeviceMemory
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::GeneralError
                | RvError::FunctionFailed
                | RvError::SlotIdInvalid
                | RvError::CryptokiNotInitialized
        )
    )
}

/// `Pkcs11(MechanismInvalid, SignInit)`-style text: the CKR name and the function.
pub(crate) fn describe(err: &Error) -> String {
    match err {
        Error::Pkcs11(rv, function) => format!("{rv:?} in {function:?}"),
        other => other.to_string(),
    }
}

/// A failed operation as a [`KeyError`]; connection losses become `Unavailable`.
pub(crate) fn op_error(token: &str, operation: &str, err: &Error) -> KeyError {
    if is_connection_loss(err) {
        KeyError::Unavailable {
            token: token.to_string(),
            problem: format!("{operation}: {}", describe(err)),
        }
    } else {
        KeyError::Pkcs11 {
            operation: operation.to_string(),
            problem: describe(err),
        }
    }
}
