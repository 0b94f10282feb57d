//! Key URIs: `file:` for software keys and RFC 7512 `pkcs11:` for token keys.
//!
//! `Display` prints a URI that parses back to the same key, except that a `pin-value` is
//! never printed; `Debug` redacts it too.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use zeroize::Zeroizing;

use crate::KeyError;

/// Characters left as they are in printed attribute values (RFC 3986 unreserved plus `/`).
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Where a key lives.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeyUri {
    /// A PEM key file (`file:/etc/kubernetes/pki/ca.key`).
    File(PathBuf),
    /// A key on a PKCS#11 token.
    Pkcs11(Pkcs11Uri),
}

impl KeyUri {
    /// The URI scheme (`file` or `pkcs11`): which backend handles the key.
    pub fn scheme(&self) -> &'static str {
        match self {
            KeyUri::File(_) => "file",
            KeyUri::Pkcs11(_) => "pkcs11",
        }
    }
}

/// Where a PKCS#11 PIN comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PinSource {
    /// `pin-source`: a file holding the PIN (trailing newline ignored).
    File(PathBuf),
    /// `pin-value`: the PIN itself (for tests; prefer `pin-source`).
    Value(Zeroizing<String>),
}

impl fmt::Debug for PinSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinSource::File(p) => f.debug_tuple("File").field(p).finish(),
            PinSource::Value(_) => f.write_str("Value(<redacted>)"),
        }
    }
}

/// An RFC 7512 `pkcs11:` URI, with the attributes kpki uses.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Pkcs11Uri {
    /// Token label (`token=`).
    pub token: Option<String>,
    /// Token serial number (`serial=`).
    pub serial: Option<String>,
    /// Slot id (`slot-id=`); accepted but tokens are found by label or serial when given.
    pub slot_id: Option<u64>,
    /// Object label (`object=`).
    pub object: Option<String>,
    /// Object id bytes (`id=`, percent-encoded).
    pub id: Option<Vec<u8>>,
    /// Module to load (`module-path=`).
    pub module_path: Option<PathBuf>,
    /// Where the user PIN comes from (`pin-source=` or `pin-value=`).
    pub pin: Option<PinSource>,
    /// The `pReserved` string passed to `C_Initialize` (`x-init-reserved=`, p11-kit's name
    /// for it), for modules that need one, e.g. NSS softokn's
    /// `configdir='sql:/var/lib/kpki/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags=`.
    pub init_reserved: Option<String>,
}

impl Pkcs11Uri {
    /// The same URI without object attributes: names the token only.
    pub fn token_only(&self) -> Pkcs11Uri {
        Pkcs11Uri {
            object: None,
            id: None,
            ..self.clone()
        }
    }

    /// The same URI without an inline `pin-value` (a `pin-source` file path is kept): what a
    /// key remembers and reports about where it came from.
    pub fn without_pin_value(&self) -> Pkcs11Uri {
        let pin = match &self.pin {
            Some(PinSource::File(p)) => Some(PinSource::File(p.clone())),
            _ => None,
        };
        Pkcs11Uri {
            pin,
            ..self.clone()
        }
    }

    /// A short description of the token for messages (`token "k8s"`, `serial 1234`).
    pub fn token_description(&self) -> String {
        match (&self.token, &self.serial, self.slot_id) {
            (Some(t), _, _) => t.clone(),
            (None, Some(s), _) => format!("serial {s}"),
            (None, None, Some(id)) => format!("slot-id {id}"),
            (None, None, None) => "<any>".to_string(),
        }
    }

    /// A short description of the object for messages.
    pub fn object_description(&self) -> String {
        match (&self.object, &self.id) {
            (Some(o), Some(id)) => format!("object {o:?} (id {})", hex::encode(id)),
            (Some(o), None) => format!("object {o:?}"),
            (None, Some(id)) => format!("id {}", hex::encode(id)),
            (None, None) => "<no object>".to_string(),
        }
    }

    fn parse(uri: &str) -> Result<Pkcs11Uri, KeyError> {
        let bad = |problem: String| KeyError::InvalidUri {
            uri: redact(uri),
            problem: scrub(&problem, uri),
        };
        let rest = &uri["pkcs11:".len()..];
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri::default();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, raw) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("path attribute {attr:?} has no '='")))?;
            out.path_attribute(name, raw).map_err(bad)?;
        }
        for attr in query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter(|a| !a.is_empty())
        {
            let (name, raw) = attr.split_once('=').ok_or_else(|| {
                bad(format!(
                    "query attribute {:?} has no '='",
                    attr.split('=').next().unwrap_or("")
                ))
            })?;
            out.query_attribute(name, raw).map_err(bad)?;
        }
        if out.token.is_none() && out.serial.is_none() && out.slot_id.is_none() {
            return Err(bad(
                "no token, serial or slot-id attribute: say which token holds the key".into(),
            ));
        }
        Ok(out)
    }

    /// Takes the path attribute `name` with its percent-encoded value `raw`.
    fn path_attribute(&mut self, name: &str, raw: &str) -> Result<(), String> {
        match name {
            "token" => set_once(&mut self.token, decode_text(raw)?, name),
            "serial" => set_once(&mut self.serial, decode_text(raw)?, name),
            "object" => set_once(&mut self.object, decode_text(raw)?, name),
            "id" => set_once(&mut self.id, decode_bytes(raw)?, name),
            "slot-id" => {
                let text = decode_text(raw)?;
                let n = text
                    .parse::<u64>()
                    .map_err(|_| format!("slot-id {text:?} is not a number"))?;
                set_once(&mut self.slot_id, n, name)
            }
            // Accepted for compatibility with other tools' URIs; kpki does not need them.
            "type"
            | "manufacturer"
            | "model"
            | "library-description"
            | "library-manufacturer"
            | "library-version"
            | "slot-description"
            | "slot-manufacturer" => Ok(()),
            other if other.starts_with("x-") => Ok(()),
            other => Err(format!("unknown path attribute {other:?}")),
        }
    }

    /// Takes the query attribute `name` with its percent-encoded value `raw`.
    fn query_attribute(&mut self, name: &str, raw: &str) -> Result<(), String> {
        match name {
            "module-path" => {
                let p = PathBuf::from(decode_text(raw)?);
                set_once(&mut self.module_path, p, name)
            }
            "pin-source" => {
                let text = decode_text(raw)?;
                let path = text.strip_prefix("file:").unwrap_or(&text);
                let path = path.strip_prefix("//").unwrap_or(path);
                if path.is_empty() {
                    return Err("pin-source is empty".into());
                }
                set_once(&mut self.pin, PinSource::File(PathBuf::from(path)), name)
            }
            "pin-value" => {
                let pin = Zeroizing::new(decode_text(raw)?);
                set_once(&mut self.pin, PinSource::Value(pin), "pin-source/pin-value")
            }
            "x-init-reserved" => {
                let text = decode_text(raw)?;
                if text.is_empty() {
                    return Err("x-init-reserved is empty".into());
                }
                if text.contains('\0') {
                    return Err("x-init-reserved contains a NUL byte".into());
                }
                set_once(&mut self.init_reserved, text, name)
            }
            "module-name" => Ok(()),
            other if other.starts_with("x-") => Ok(()),
            other => Err(format!("unknown query attribute {other:?}")),
        }
    }
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("attribute {name} given twice"));
    }
    *slot = Some(value);
    Ok(())
}

fn decode_bytes(raw: &str) -> Result<Vec<u8>, String> {
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let ok = bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit));
            if !ok {
                return Err(format!("bad percent-encoding in {raw:?}"));
            }
        }
    }
    Ok(percent_decode_str(raw).collect())
}

fn decode_text(raw: &str) -> Result<String, String> {
    String::from_utf8(decode_bytes(raw)?).map_err(|_| format!("{raw:?} is not UTF-8 text"))
}

/// The raw values of every PIN attribute in `uri`, path or query, whatever the spelling
/// of its name (case, percent-encoding).
fn pin_values(uri: &str) -> Vec<&str> {
    let body = uri.strip_prefix("pkcs11:").unwrap_or(uri);
    body.split(['?', ';', '&'])
        .filter_map(|a| a.split_once('='))
        .filter(|(name, _)| {
            let name: String = percent_decode_str(name).decode_utf8_lossy().to_lowercase();
            name.trim() == "pin-value"
        })
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
        .collect()
}

/// `text` with every PIN value of `uri` (raw and decoded) replaced by `<redacted>`.
fn scrub(text: &str, uri: &str) -> String {
    let mut out = text.to_string();
    let mut values: Vec<String> = Vec::new();
    for v in pin_values(uri) {
        values.push(v.to_string());
        values.push(percent_decode_str(v).decode_utf8_lossy().into_owned());
    }
    // Longest first, so a value that contains another is replaced whole.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in values.iter().filter(|v| !v.is_empty()) {
        out = out.replace(v.as_str(), "<redacted>");
    }
    out
}

/// The URI text with every PIN value replaced, for error messages.
fn redact(uri: &str) -> String {
    scrub(uri, uri)
}

impl KeyUri {
    /// A file URI for this path.
    pub fn file(path: impl Into<PathBuf>) -> KeyUri {
        KeyUri::File(path.into())
    }

    /// The key file path, for `file:` URIs.
    pub fn as_file(&self) -> Option<&Path> {
        match self {
            KeyUri::File(p) => Some(p),
            KeyUri::Pkcs11(_) => None,
        }
    }

    /// True for `pkcs11:` URIs.
    pub fn is_pkcs11(&self) -> bool {
        matches!(self, KeyUri::Pkcs11(_))
    }
}

impl<'de> serde::Deserialize<'de> for KeyUri {
    /// A key URI from its text (configuration), read as [`KeyUri::from_str`] reads it; the
    /// text is zeroized (it may carry a `pin-value`).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<KeyUri, D::Error> {
        let text = Zeroizing::new(<String as serde::Deserialize>::deserialize(d)?);
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for KeyUri {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.starts_with("pkcs11:") {
            return Pkcs11Uri::parse(s).map(KeyUri::Pkcs11);
        }
        if let Some(rest) = s.strip_prefix("file:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = decode_text(path).map_err(|problem| KeyError::InvalidUri {
                uri: s.to_string(),
                problem,
            })?;
            if !path.starts_with('/') {
                return Err(KeyError::InvalidUri {
                    uri: s.to_string(),
                    problem: "file: URIs need an absolute path (file:/etc/kubernetes/pki/ca.key)"
                        .into(),
                });
            }
            return Ok(KeyUri::File(PathBuf::from(path)));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            // A relative path is made absolute here, so that the URI prints as a `file:` URI
            // that reads back as the same key wherever it is read.
            let path = std::path::absolute(s).map_err(|e| KeyError::InvalidUri {
                uri: s.to_string(),
                problem: format!("cannot make the path absolute: {e}"),
            })?;
            return Ok(KeyUri::File(path));
        }
        Err(KeyError::InvalidUri {
            uri: redact(s),
            problem: "expected file:/path/to/key or pkcs11:token=...;object=...".into(),
        })
    }
}

/// A path as the part of a `file:` URI after `file:`, percent-encoded; a path that itself
/// starts with `//` gets an empty authority (`//`) first, since the parser takes one `//`
/// away.
fn file_text(path: &Path) -> String {
    let text = path.to_string_lossy();
    let encoded = utf8_percent_encode(&text, VALUE).to_string();
    if text.starts_with("//") {
        format!("//{encoded}")
    } else {
        encoded
    }
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyUri::File(p) => write!(f, "file:{}", file_text(p)),
            KeyUri::Pkcs11(u) => u.fmt(f),
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        if let Some(t) = &self.token {
            path.push(format!("token={}", utf8_percent_encode(t, VALUE)));
        }
        if let Some(s) = &self.serial {
            path.push(format!("serial={}", utf8_percent_encode(s, VALUE)));
        }
        if let Some(n) = self.slot_id {
            path.push(format!("slot-id={n}"));
        }
        if let Some(o) = &self.object {
            path.push(format!("object={}", utf8_percent_encode(o, VALUE)));
        }
        if let Some(id) = &self.id {
            let enc: String = id.iter().map(|b| format!("%{b:02x}")).collect();
            path.push(format!("id={enc}"));
        }
        let mut query = Vec::new();
        if let Some(m) = &self.module_path {
            query.push(format!(
                "module-path={}",
                utf8_percent_encode(&m.to_string_lossy(), VALUE)
            ));
        }
        if let Some(r) = &self.init_reserved {
            query.push(format!("x-init-reserved={}", utf8_percent_encode(r, VALUE)));
        }
        if let Some(PinSource::File(p)) = &self.pin {
            query.push(format!("pin-source=file:{}", file_text(p)));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    /// Display then parse gives the same key URI back, whatever the path looks like.
    #[test]
    fn key_uris_round_trip() {
        let paths = [
            "/etc/kubernetes/pki/ca.key",
            "//x/ca.key",
            "////x",
            "/a b/k",
            "/a%20b/k",
            "/a?b#c",
            "/ä/k",
            "/;/k",
            "/&=/k",
        ];
        let mut texts: Vec<String> = Vec::new();
        for p in paths {
            texts.push(KeyUri::File(PathBuf::from(p)).to_string());
            if !p.starts_with("//") {
                // (`file://host/…` names a host: not a path kpki reads.)
                texts.push(format!("file:{}", utf8_percent_encode(p, VALUE)));
            }
            texts.push(format!(
                "pkcs11:token=t;object=o?module-path={}&pin-source={}",
                utf8_percent_encode(p, VALUE),
                utf8_percent_encode(&format!("file:{}", file_text(Path::new(p))), VALUE)
            ));
        }
        texts.extend(["./relkey.pem".to_string(), "../k.pem".to_string()]);
        for t in &texts {
            let first: KeyUri = t.parse().unwrap_or_else(|e| panic!("{t}: {e}"));
            let shown = first.to_string();
            let again: KeyUri = shown
                .parse()
                .unwrap_or_else(|e| panic!("{t} → {shown}: {e}"));
            assert_eq!(first, again, "{t} → {shown}");
        }
        let rel: KeyUri = "./relkey.pem".parse().unwrap();
        assert!(rel.as_file().is_some_and(|p| p.is_absolute()), "{rel}");
    }

    /// Every spelling and position of a PIN attribute, with each kind of parse error (and
    /// with none): the PIN never appears in the error or in the parsed URI's display.
    #[test]
    fn pins_are_never_echoed() {
        let names = [
            "pin-value",
            "PIN-VALUE",
            "Pin-Value",
            "pin%2Dvalue",
            "pin%2dvalue",
            "%70in-value",
            "PIN%2DVALUE",
        ];
        let values = ["S3CRET", "S3CRET%ZZ", "S%33CRET", "S3CRET%20x"];
        let faults = [
            "",
            "&bogus=1",
            ";bogus=1",
            "&module-path=/x&module-path=/y",
            "&pin-value=x",
            "&pin-source=file:/p",
            ";object=%ZZ",
        ];
        let mut checked = 0;
        for name in names {
            for value in values {
                for fault in faults {
                    for in_path in [false, true] {
                        let uri = if in_path {
                            format!("pkcs11:token=t;object=o;{name}={value}?module-path=/m{fault}")
                        } else {
                            format!("pkcs11:token=t;object=o?{name}={value}&module-path=/m{fault}")
                        };
                        let shown = match uri.parse::<KeyUri>() {
                            Ok(k) => format!("{k} {k:?}"),
                            Err(e) => format!("{e} {e:?}"),
                        };
                        for secret in ["S3CRET", "S%33CRET", "S3CR"] {
                            assert!(!shown.contains(secret), "{uri}: {shown}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 4 * 7 * 2);
    }

    use super::*;

    fn p11(s: &str) -> Pkcs11Uri {
        match s.parse::<KeyUri>() {
            Ok(KeyUri::Pkcs11(u)) => u,
            other => panic!("not a pkcs11 URI: {other:?}"),
        }
    }

    #[test]
    fn parses_rfc7512_attributes_with_percent_decoding() {
        let u = p11(
            "pkcs11:token=My%20Token;object=kubernetes-ca;id=%01%ab;serial=42;slot-id=7?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/kpki/pin",
        );
        assert_eq!(u.token.as_deref(), Some("My Token"));
        assert_eq!(u.object.as_deref(), Some("kubernetes-ca"));
        assert_eq!(u.id.as_deref(), Some(&[0x01, 0xab][..]));
        assert_eq!(u.serial.as_deref(), Some("42"));
        assert_eq!(u.slot_id, Some(7));
        assert_eq!(
            u.module_path.as_deref(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.pin, Some(PinSource::File("/etc/kpki/pin".into())));
        let again = p11(&u.to_string());
        assert_eq!(again, u);
    }

    #[test]
    fn init_reserved_is_decoded_and_printed_back() {
        let u = p11(
            "pkcs11:token=NSS%20Certificate%20DB;object=ca?module-path=/usr/lib/x86_64-linux-gnu/libsoftokn3.so&x-init-reserved=configdir%3D%27sql%3A%2Ftmp%2Fdb%27%20certPrefix%3D%27%27%20keyPrefix%3D%27%27%20secmod%3D%27secmod.db%27%20flags%3D&pin-source=file:/p",
        );
        assert_eq!(u.token.as_deref(), Some("NSS Certificate DB"));
        assert_eq!(
            u.init_reserved.as_deref(),
            Some("configdir='sql:/tmp/db' certPrefix='' keyPrefix='' secmod='secmod.db' flags=")
        );
        assert_eq!(u.pin, Some(PinSource::File("/p".into())));
        let printed = u.to_string();
        assert!(
            printed.contains("x-init-reserved=configdir%3D%27sql%3A/tmp/db%27"),
            "{printed}"
        );
        assert_eq!(p11(&printed), u);
        // Kept when a key is reduced to its token or loses its inline PIN.
        assert_eq!(u.token_only().init_reserved, u.init_reserved);
        assert_eq!(u.without_pin_value().init_reserved, u.init_reserved);
        // Other vendor attributes are still accepted and ignored.
        assert_eq!(p11("pkcs11:token=t?x-other=1").init_reserved, None);
    }

    #[test]
    fn pin_value_never_printed() {
        let uri: KeyUri = "pkcs11:token=t;object=o?pin-value=s3cr3t-1234"
            .parse()
            .expect("parses");
        let KeyUri::Pkcs11(u) = &uri else {
            panic!("pkcs11")
        };
        assert!(matches!(&u.pin, Some(PinSource::Value(v)) if v.as_str() == "s3cr3t-1234"));
        assert!(!uri.to_string().contains("s3cr3t"));
        assert!(!format!("{uri:?}").contains("s3cr3t"));
        let err = "pkcs11:token=t;bogus=1?pin-value=s3cr3t-1234"
            .parse::<KeyUri>()
            .expect_err("bad");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn file_uris() {
        assert_eq!(
            "file:/etc/kubernetes/pki/ca.key".parse::<KeyUri>().ok(),
            Some(KeyUri::file("/etc/kubernetes/pki/ca.key"))
        );
        assert_eq!(
            "file:///a%20b/k.key".parse::<KeyUri>().ok(),
            Some(KeyUri::file("/a b/k.key"))
        );
        assert_eq!(KeyUri::file("/a b/k.key").to_string(), "file:/a%20b/k.key");
        assert!("file:relative/key".parse::<KeyUri>().is_err());
    }

    #[test]
    fn malformed_uris_are_refused() {
        for bad in [
            "pkcs11:token=a;id=%zz",
            "pkcs11:object=x",
            "pkcs11:token=a;token=b",
            "pkcs11:token=a;frob=1",
            "pkcs11:token=a;slot-id=x",
            "pkcs11:token=a?pin-source=",
            "pkcs11:token=a?x-init-reserved=",
            "pkcs11:token=a?x-init-reserved=a%00b",
            "pkcs11:token=a?x-init-reserved=a&x-init-reserved=b",
            "pkcs11:token",
            "http://example/key",
            "ca.key",
        ] {
            assert!(bad.parse::<KeyUri>().is_err(), "{bad} should be refused");
        }
    }
}
