//! Mapping cryptoki errors to [`KeyError`]s, and telling lost connections, busy or broken
//! tokens and refusals apart.
//!
//! - [`Class::Lost`]: the session, login or token went away; reconnecting may help.
//! - [`Class::Failing`]: `CKR_GENERAL_ERROR`, `CKR_DEVICE_MEMORY`, `CKR_FUNCTION_FAILED`.
//!   These say nothing about the cause: a store locked by another process (SQLite "database
//!   is locked" comes back like this), a template the token refused in its own way
//!   (tpm2-pkcs11), or a module whose back end broke (tpm2-pkcs11 after its resource
//!   manager restarted). Callers retry them with backoff and, for signing, escalate
//!   (reconnect, re-login, re-initialise the module); they are never reported as
//!   "unavailable" on their own.
//! - [`Class::Refused`]: the token refused the request (template, mechanism, key size);
//!   retrying cannot help.
//! - [`Class::Other`]: anything else, reported as it is.

use cryptoki::error::{Error, RvError};
use kpki_signer::KeyError;

/// What a PKCS#11 error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Session, login or token lost: reconnect.
    Lost,
    /// A failure without a stated cause (busy store or broken module): retry, escalate.
    Failing,
    /// The token refused the request as given.
    Refused,
    /// Anything else.
    Other,
}

/// The PKCS#11 return value of an error, if it has one.
pub(crate) fn rv(err: &Error) -> Option<RvError> {
    match err {
        Error::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// The class of a return value.
pub(crate) fn class_of(rv: RvError) -> Class {
    match rv {
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::UserNotLoggedIn
        | RvError::ObjectHandleInvalid
        | RvError::KeyHandleInvalid
        | RvError::DeviceRemoved
        | RvError::DeviceError
        | RvError::TokenNotPresent
        | RvError::TokenNotRecognized
        | RvError::SlotIdInvalid
        | RvError::CryptokiNotInitialized => Class::Lost,
        RvError::GeneralError | RvError::DeviceMemory | RvError::FunctionFailed => Class::Failing,
        RvError::AttributeValueInvalid
        | RvError::AttributeTypeInvalid
        | RvError::AttributeReadOnly
        | RvError::TemplateInconsistent
        | RvError::TemplateIncomplete
        | RvError::MechanismInvalid
        | RvError::MechanismParamInvalid
        | RvError::KeySizeRange
        | RvError::KeyTypeInconsistent
        | RvError::KeyFunctionNotPermitted
        | RvError::DomainParamsInvalid
        | RvError::CurveNotSupported
        | RvError::FunctionNotSupported
        | RvError::ActionProhibited => Class::Refused,
        _ => Class::Other,
    }
}

/// The class of an error (errors without a return value are [`Class::Other`]).
pub(crate) fn class(err: &Error) -> Class {
    rv(err).map(class_of).unwrap_or(Class::Other)
}

/// `MechanismInvalid in SignInit`-style text: the CKR name and the function.
pub(crate) fn describe(err: &Error) -> String {
    match err {
        Error::Pkcs11(rv, function) => format!("{rv:?} in {function:?}"),
        other => other.to_string(),
    }
}

/// A failed operation as a [`KeyError`]: connection losses become `Unavailable`, everything
/// else (including a token that failed without saying why) a PKCS#11 error naming the call.
pub(crate) fn op_error(token: &str, operation: &str, err: &Error) -> KeyError {
    match class(err) {
        Class::Lost => KeyError::Unavailable {
            token: token.to_string(),
            problem: format!("{operation}: {}", describe(err)),
        },
        Class::Refused => KeyError::Pkcs11 {
            operation: operation.to_string(),
            problem: format!("token {token:?} refused it: {}", describe(err)),
        },
        Class::Failing | Class::Other => KeyError::Pkcs11 {
            operation: operation.to_string(),
            problem: format!("token {token:?}: {}", describe(err)),
        },
    }
}

/// The error after a token stayed busy through every retry: a clear "busy", never
/// "unavailable".
pub(crate) fn busy_error(
    token: &str,
    operation: &str,
    err: &Error,
    waited: std::time::Duration,
) -> KeyError {
    KeyError::Pkcs11 {
        operation: operation.to_string(),
        problem: format!(
            "token {token:?} busy: {} on every try for {:.1} s (another process may be \
             writing the token's store); try again",
            describe(err),
            waited.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cryptoki::context::Function;

    #[test]
    fn classes_of_return_values() {
        let table = [
            (RvError::SessionHandleInvalid, Class::Lost),
            (RvError::DeviceRemoved, Class::Lost),
            (RvError::DeviceError, Class::Lost),
            (RvError::TokenNotPresent, Class::Lost),
            (RvError::CryptokiNotInitialized, Class::Lost),
            (RvError::UserNotLoggedIn, Class::Lost),
            // Not "connection lost": a locked store or a template refused without saying so.
            (RvError::GeneralError, Class::Failing),
            (RvError::DeviceMemory, Class::Failing),
            (RvError::FunctionFailed, Class::Failing),
            (RvError::AttributeValueInvalid, Class::Refused),
            (RvError::TemplateInconsistent, Class::Refused),
            (RvError::MechanismInvalid, Class::Refused),
            (RvError::KeySizeRange, Class::Refused),
            (RvError::CurveNotSupported, Class::Refused),
            (RvError::PinIncorrect, Class::Other),
            (RvError::ArgumentsBad, Class::Other),
        ];
        for (rv, want) in table {
            assert_eq!(class_of(rv), want, "{rv:?}");
        }
    }

    #[test]
    fn only_lost_connections_read_unavailable() {
        let table = [
            (RvError::SessionHandleInvalid, true),
            (RvError::GeneralError, false),
            (RvError::DeviceMemory, false),
            (RvError::FunctionFailed, false),
            (RvError::AttributeValueInvalid, false),
        ];
        for (rv, unavailable) in table {
            let e = op_error(
                "kpki",
                "C_GenerateKeyPair",
                &Error::Pkcs11(rv, Function::GenerateKeyPair),
            );
            assert_eq!(e.is_unavailable(), unavailable, "{rv:?}: {e}");
            assert!(e.to_string().contains(&format!("{rv:?}")), "{e}");
        }
        let refused = op_error(
            "kpki",
            "C_GenerateKeyPair",
            &Error::Pkcs11(RvError::TemplateInconsistent, Function::GenerateKeyPair),
        );
        assert!(refused.to_string().contains("refused"), "{refused}");
        let busy = busy_error(
            "kpki",
            "C_GenerateKeyPair",
            &Error::Pkcs11(RvError::DeviceMemory, Function::GenerateKeyPair),
            std::time::Duration::from_secs(10),
        );
        assert!(!busy.is_unavailable());
        assert!(
            busy.to_string().contains("busy") && busy.to_string().contains("10.0 s"),
            "{busy}"
        );
    }
}
