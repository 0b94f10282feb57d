//! kubeadm's strict decoding of its v1beta4 documents (`VerifyUnmarshalStrict`): every field
//! of `InitConfiguration`, `ClusterConfiguration`, `JoinConfiguration`, `ResetConfiguration`
//! and `UpgradeConfiguration` as data, so that an unknown or misspelt field (matched with
//! case), a value of the wrong JSON type, or a duration Go cannot parse is refused with the
//! field's path. Only the shapes are checked here; meanings are validated where kpki uses them.

use serde_norway::Value;

use crate::duration::GoDuration;

/// The shape of a value in kubeadm's Go types.
#[derive(Clone, Copy)]
enum Shape {
    /// A string.
    Str,
    /// A boolean.
    Bool,
    /// An integer.
    Int,
    /// A `metav1.Duration` (a Go duration string).
    Duration,
    /// A struct with these fields.
    Struct(&'static [(&'static str, Shape)]),
    /// A list.
    List(&'static Shape),
    /// A map with string keys.
    Map(&'static Shape),
    /// A Kubernetes core type kpki does not look into (an env var's `valueFrom`).
    Any,
}

use Shape::{Any, Bool, Duration, Int, List, Map, Str, Struct};

const STRS: Shape = List(&Str);
const ARGS: Shape = List(&Struct(&[("name", Str), ("value", Str)]));
const ENVS: Shape = List(&Struct(&[
    ("name", Str),
    ("value", Str),
    ("valueFrom", Any),
]));
const VOLUMES: Shape = List(&Struct(&[
    ("name", Str),
    ("hostPath", Str),
    ("mountPath", Str),
    ("readOnly", Bool),
    ("pathType", Str),
]));
const COMPONENT: &[(&str, Shape)] = &[
    ("extraArgs", ARGS),
    ("extraVolumes", VOLUMES),
    ("extraEnvs", ENVS),
];
const PATCHES: Shape = Struct(&[("directory", Str)]);
const TIMEOUTS: Shape = Struct(&[
    ("controlPlaneComponentHealthCheck", Duration),
    ("kubeletHealthCheck", Duration),
    ("kubernetesAPICall", Duration),
    ("etcdAPICall", Duration),
    ("tlsBootstrap", Duration),
    ("discovery", Duration),
    ("upgradeManifests", Duration),
]);
const NODE_REGISTRATION: Shape = Struct(&[
    ("name", Str),
    ("criSocket", Str),
    (
        "taints",
        List(&Struct(&[
            ("key", Str),
            ("value", Str),
            ("effect", Str),
            ("timeAdded", Str),
        ])),
    ),
    ("kubeletExtraArgs", ARGS),
    ("ignorePreflightErrors", STRS),
    ("imagePullPolicy", Str),
    ("imagePullSerial", Bool),
]);
const API_ENDPOINT: Shape = Struct(&[("advertiseAddress", Str), ("bindPort", Int)]);
const TYPE_META: [(&str, Shape); 2] = [("apiVersion", Str), ("kind", Str)];

const INIT: &[(&str, Shape)] = &[
    TYPE_META[0],
    TYPE_META[1],
    (
        "bootstrapTokens",
        List(&Struct(&[
            ("token", Str),
            ("description", Str),
            ("ttl", Duration),
            ("expires", Str),
            ("usages", STRS),
            ("groups", STRS),
        ])),
    ),
    ("dryRun", Bool),
    ("nodeRegistration", NODE_REGISTRATION),
    ("localAPIEndpoint", API_ENDPOINT),
    ("certificateKey", Str),
    ("skipPhases", STRS),
    ("patches", PATCHES),
    ("timeouts", TIMEOUTS),
];

const CLUSTER: &[(&str, Shape)] = &[
    TYPE_META[0],
    TYPE_META[1],
    (
        "etcd",
        Struct(&[
            (
                "local",
                Struct(&[
                    ("imageRepository", Str),
                    ("imageTag", Str),
                    ("dataDir", Str),
                    ("extraArgs", ARGS),
                    ("extraEnvs", ENVS),
                    ("serverCertSANs", STRS),
                    ("peerCertSANs", STRS),
                ]),
            ),
            (
                "external",
                Struct(&[
                    ("endpoints", STRS),
                    ("httpEndpoints", STRS),
                    ("caFile", Str),
                    ("certFile", Str),
                    ("keyFile", Str),
                ]),
            ),
        ]),
    ),
    (
        "networking",
        Struct(&[
            ("serviceSubnet", Str),
            ("podSubnet", Str),
            ("dnsDomain", Str),
        ]),
    ),
    ("kubernetesVersion", Str),
    ("controlPlaneEndpoint", Str),
    (
        "apiServer",
        Struct(&[COMPONENT[0], COMPONENT[1], COMPONENT[2], ("certSANs", STRS)]),
    ),
    ("controllerManager", Struct(COMPONENT)),
    ("scheduler", Struct(COMPONENT)),
    (
        "dns",
        Struct(&[
            ("imageRepository", Str),
            ("imageTag", Str),
            ("disabled", Bool),
        ]),
    ),
    ("proxy", Struct(&[("disabled", Bool)])),
    ("certificatesDir", Str),
    ("imageRepository", Str),
    ("featureGates", Map(&Bool)),
    ("clusterName", Str),
    ("encryptionAlgorithm", Str),
    ("certificateValidityPeriod", Duration),
    ("caCertificateValidityPeriod", Duration),
];

const JOIN: &[(&str, Shape)] = &[
    TYPE_META[0],
    TYPE_META[1],
    ("dryRun", Bool),
    ("nodeRegistration", NODE_REGISTRATION),
    ("caCertPath", Str),
    (
        "discovery",
        Struct(&[
            (
                "bootstrapToken",
                Struct(&[
                    ("token", Str),
                    ("apiServerEndpoint", Str),
                    ("caCertHashes", STRS),
                    ("unsafeSkipCAVerification", Bool),
                ]),
            ),
            ("file", Struct(&[("kubeConfigPath", Str)])),
            ("tlsBootstrapToken", Str),
        ]),
    ),
    (
        "controlPlane",
        Struct(&[("localAPIEndpoint", API_ENDPOINT), ("certificateKey", Str)]),
    ),
    ("skipPhases", STRS),
    ("patches", PATCHES),
    ("timeouts", TIMEOUTS),
];

const RESET: &[(&str, Shape)] = &[
    TYPE_META[0],
    TYPE_META[1],
    ("cleanupTmpDir", Bool),
    ("certificatesDir", Str),
    ("criSocket", Str),
    ("dryRun", Bool),
    ("force", Bool),
    ("ignorePreflightErrors", STRS),
    ("skipPhases", STRS),
    ("unmountFlags", STRS),
    ("timeouts", TIMEOUTS),
];

const UPGRADE: &[(&str, Shape)] = &[
    TYPE_META[0],
    TYPE_META[1],
    (
        "apply",
        Struct(&[
            ("kubernetesVersion", Str),
            ("allowExperimentalUpgrades", Bool),
            ("allowRCUpgrades", Bool),
            ("certificateRenewal", Bool),
            ("dryRun", Bool),
            ("etcdUpgrade", Bool),
            ("forceUpgrade", Bool),
            ("ignorePreflightErrors", STRS),
            ("patches", PATCHES),
            ("printConfig", Bool),
            ("skipPhases", STRS),
            ("imagePullPolicy", Str),
            ("imagePullSerial", Bool),
        ]),
    ),
    (
        "diff",
        Struct(&[("kubernetesVersion", Str), ("contextLines", Int)]),
    ),
    (
        "node",
        Struct(&[
            ("certificateRenewal", Bool),
            ("dryRun", Bool),
            ("etcdUpgrade", Bool),
            ("ignorePreflightErrors", STRS),
            ("skipPhases", STRS),
            ("patches", PATCHES),
            ("imagePullPolicy", Str),
            ("imagePullSerial", Bool),
        ]),
    ),
    (
        "plan",
        Struct(&[
            ("kubernetesVersion", Str),
            ("allowExperimentalUpgrades", Bool),
            ("allowRCUpgrades", Bool),
            ("dryRun", Bool),
            ("etcdUpgrade", Bool),
            ("ignorePreflightErrors", STRS),
            ("printConfig", Bool),
        ]),
    ),
    ("timeouts", TIMEOUTS),
];

/// The kubeadm kinds of `kubeadm.k8s.io/v1beta4` and their fields.
const KINDS: &[(&str, &[(&str, Shape)])] = &[
    ("InitConfiguration", INIT),
    ("ClusterConfiguration", CLUSTER),
    ("JoinConfiguration", JOIN),
    ("ResetConfiguration", RESET),
    ("UpgradeConfiguration", UPGRADE),
];

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

fn walk(path: &str, value: &Value, shape: &Shape) -> Result<(), String> {
    let wrong = |want: &str| {
        format!(
            "strict decoding error: field {path:?} must be {want}, not {}",
            type_name(value)
        )
    };
    if value.is_null() {
        return Ok(());
    }
    match shape {
        Any => Ok(()),
        Str => value.as_str().map(|_| ()).ok_or_else(|| wrong("a string")),
        Bool => value
            .as_bool()
            .map(|_| ())
            .ok_or_else(|| wrong("a boolean")),
        Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            _ => Err(wrong("an integer")),
        },
        Duration => {
            let text = value.as_str().ok_or_else(|| wrong("a duration string"))?;
            GoDuration::parse_kubeadm(text)
                .map(|_| ())
                .map_err(|e| format!("field {path:?}: {e}"))
        }
        List(item) => {
            let items = value.as_sequence().ok_or_else(|| wrong("a list"))?;
            for (i, v) in items.iter().enumerate() {
                walk(&format!("{path}[{i}]"), v, item)?;
            }
            Ok(())
        }
        Map(item) => {
            let map = value.as_mapping().ok_or_else(|| wrong("a mapping"))?;
            for (k, v) in map {
                let key = k.as_str().ok_or_else(|| {
                    format!("strict decoding error: field {path:?} has a key that is not a string")
                })?;
                walk(&join(path, key), v, item)?;
            }
            Ok(())
        }
        Struct(fields) => {
            let map = value.as_mapping().ok_or_else(|| wrong("a mapping"))?;
            for (k, v) in map {
                let key = k.as_str().ok_or_else(|| {
                    format!("strict decoding error: field {path:?} has a key that is not a string")
                })?;
                let field = join(path, key);
                let (_, sub) = fields.iter().find(|(n, _)| *n == key).ok_or_else(|| {
                    let hint = fields
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(key))
                        .map(|(n, _)| format!(" (did you mean {:?}?)", join(path, n)))
                        .unwrap_or_default();
                    format!("strict decoding error: unknown field {field:?}{hint}")
                })?;
                walk(&field, v, sub)?;
            }
            Ok(())
        }
    }
}

/// Checks document `value` of `kind` (in `kubeadm.k8s.io/v1beta4`) strictly; `Err` names the
/// kind and the field.
pub(crate) fn check(kind: &str, value: &Value) -> Result<(), String> {
    let (_, fields) = KINDS.iter().find(|(k, _)| *k == kind).ok_or_else(|| {
        format!(
            "{kind}: unknown kind in kubeadm.k8s.io/v1beta4 (expected {})",
            KINDS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
        )
    })?;
    walk("", value, &Struct(fields)).map_err(|e| format!("{kind}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: &str, body: &str) -> Result<(), String> {
        let text = format!("apiVersion: kubeadm.k8s.io/v1beta4\nkind: {kind}\n{body}");
        let value: Value = serde_norway::from_str(&text).unwrap();
        check(kind, &value)
    }

    /// Documents kubeadm decodes: kind, body.
    const OK: &[(&str, &str)] = &[
        (
            "ClusterConfiguration",
            "apiServer:\n  certSANs: [a.example.com]\n  extraArgs:\n  - name: v\n    value: \"4\"\n",
        ),
        (
            "ClusterConfiguration",
            "certificateValidityPeriod: 2160.5h\ncaCertificateValidityPeriod: 87600h0m0s\n",
        ),
        (
            "ClusterConfiguration",
            "featureGates:\n  RootlessControlPlane: false\n",
        ),
        (
            "ClusterConfiguration",
            "etcd:\n  local:\n    dataDir: /var/lib/etcd\n    serverCertSANs: []\n",
        ),
        (
            "ClusterConfiguration",
            "networking:\n  serviceSubnet: 10.96.0.0/12\n  podSubnet: 10.244.0.0/16\n",
        ),
        (
            "InitConfiguration",
            "nodeRegistration:\n  name: cp1\n  taints: null\n  kubeletExtraArgs:\n  - name: a\n    value: b\nlocalAPIEndpoint:\n  bindPort: 6443\ntimeouts:\n  kubeletHealthCheck: 4m0s\n",
        ),
        (
            "InitConfiguration",
            "bootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 24h\n  usages: [signing]\n",
        ),
        (
            "JoinConfiguration",
            "discovery:\n  bootstrapToken:\n    token: abcdef.0123456789abcdef\n    unsafeSkipCAVerification: true\n",
        ),
        ("ResetConfiguration", "force: true\n"),
        ("UpgradeConfiguration", "apply:\n  forceUpgrade: true\n"),
    ];

    /// Documents kubeadm refuses: kind, body, a part of the error.
    const BAD: &[(&str, &str, &str)] = &[
        (
            "ClusterConfiguration",
            "apiServer:\n  certSAN: [a]\n",
            "unknown field \"apiServer.certSAN\"",
        ),
        (
            "ClusterConfiguration",
            "apiServer:\n  CertSANs: [a]\n",
            "did you mean \"apiServer.certSANs\"",
        ),
        (
            "ClusterConfiguration",
            "networking:\n  serviceSubnets: 10.96.0.0/12\n",
            "unknown field \"networking.serviceSubnets\"",
        ),
        (
            "ClusterConfiguration",
            "metadata:\n  name: x\n",
            "unknown field \"metadata\"",
        ),
        (
            "ClusterConfiguration",
            "certificateValidityPeriod: 1y\n",
            "field \"certificateValidityPeriod\": invalid duration",
        ),
        (
            "ClusterConfiguration",
            "certificateValidityPeriod: 8760\n",
            "must be a duration string",
        ),
        (
            "ClusterConfiguration",
            "kubernetesVersion: 1.37\n",
            "\"kubernetesVersion\" must be a string",
        ),
        (
            "ClusterConfiguration",
            "featureGates:\n  RootlessControlPlane: \"no\"\n",
            "\"featureGates.RootlessControlPlane\" must be a boolean",
        ),
        (
            "ClusterConfiguration",
            "apiServer:\n  certSANs: a.example.com\n",
            "\"apiServer.certSANs\" must be a list",
        ),
        (
            "ClusterConfiguration",
            "etcd:\n  local:\n    extraArgs:\n    - name: a\n      valu: b\n",
            "unknown field \"etcd.local.extraArgs[0].valu\"",
        ),
        (
            "InitConfiguration",
            "localAPIEndpoint:\n  bindPort: \"6443\"\n",
            "must be an integer",
        ),
        (
            "InitConfiguration",
            "nodeRegistration:\n  nodeName: cp1\n",
            "unknown field \"nodeRegistration.nodeName\"",
        ),
        (
            "InitConfiguration",
            "timeouts:\n  discovery: 5 minutes\n",
            "field \"timeouts.discovery\": invalid duration",
        ),
        ("KubeadmConfig", "", "KubeadmConfig: unknown kind"),
        (
            "ClusterConfiguration",
            "certificateValidityPeriod: 30d\n",
            "field \"certificateValidityPeriod\": invalid duration \"30d\": unknown unit",
        ),
    ];

    #[test]
    fn strict_decoding_table() {
        for (kind, body) in OK {
            assert_eq!(doc(kind, body), Ok(()), "{body}");
        }
        for (kind, body, want) in BAD {
            let e = doc(kind, body).expect_err(body);
            assert!(e.contains(want), "{body}: {e}");
            assert!(e.starts_with(kind), "{e}");
        }
    }
}
