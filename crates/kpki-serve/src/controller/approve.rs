//! The optional approver (off unless `[kubernetes].approve` names a signer). Like
//! kube-controller-manager's csrapproving controller it approves only what a rule can
//! decide without a human, and leaves everything else pending:
//!
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a request for `system:node:<name>` in
//!   `system:nodes` (the signer's rules), from a bootstrap token (`system:bootstrappers`) or
//!   from that node itself, and only when a SubjectAccessReview says the requester may
//!   `create` `certificatesigningrequests/nodeclient` (bootstrap) or `…/selfnodeclient`
//!   (renewal) — the RBAC kubeadm sets up;
//! - `kubernetes.io/kubelet-serving`: a request from node `<name>` itself, for
//!   `system:node:<name>`, whose every SAN is one of the Node object's own addresses
//!   (DNS names: `Hostname`, `InternalDNS`, `ExternalDNS`; IPs: `InternalIP`, `ExternalIP`).
//!
//! Each verdict is an `approval` audit line naming the object, requester and reason.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use kpki_pki::csr::{self, Examined};
use kpki_pki::csr_object;
use kpki_pki::csr_stage::{Stage, condition, stage};
use kpki_pki::signers::{self, KubeSigner, NODE_USER_PREFIX, NODES_GROUP};
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::object;
use super::sign::{Ctx, ReconcileError};
use crate::audit::{self, Decision, Event, Record};

/// The bootstrap token group.
const SYSTEM_BOOTSTRAPPERS: &str = "system:bootstrappers";

/// The approver's verdict on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Approve, with the condition's message.
    Approve(String),
    /// Leave it for a human, and why.
    Leave(String),
}

/// Decides on one pending request of an approvable signer and approves it if the rules say.
pub(crate) async fn consider(
    object: &CertificateSigningRequest,
    ctx: &Arc<Ctx>,
) -> Result<Action, ReconcileError> {
    let verdict = verdict(object, ctx).await?;
    audit(object, ctx, &verdict)?;
    match verdict {
        Verdict::Approve(message) => {
            if write_approval(object, ctx, &message).await? {
                ctx.app.metrics.csr.approved.inc();
                tracing::info!(csr = %object.name_any(), signer = %object.spec.signer_name, "approved");
            }
        }
        Verdict::Leave(reason) => {
            tracing::info!(csr = %object.name_any(), signer = %object.spec.signer_name, %reason, "left for a human to approve or deny");
        }
    }
    Ok(Action::await_change())
}

async fn verdict(object: &CertificateSigningRequest, ctx: &Ctx) -> Result<Verdict, ReconcileError> {
    let requester = object::requester(object);
    let signer = KubeSigner::for_name(&object.spec.signer_name);
    let examined = match csr_object::request_of(object, None)
        .map_err(|e| e.to_string())
        .and_then(|r| csr::examine_for(&signer, &r).map_err(|e| e.to_string()))
    {
        Ok(e) => e,
        Err(e) => return Ok(Verdict::Leave(format!("the signer's rules refuse it: {e}"))),
    };
    let groups = &requester.orgs;
    match object.spec.signer_name.as_str() {
        signers::KUBE_APISERVER_CLIENT_KUBELET => {
            let Some(subresource) = client_subresource(&requester.cn, groups, &examined.cn) else {
                return Ok(Verdict::Leave(format!(
                    "requester {:?} is neither a bootstrap token nor node {:?} itself",
                    requester.cn, examined.cn
                )));
            };
            if may_create(ctx, object, subresource).await? {
                Ok(Verdict::Approve(format!(
                    "kpki: {subresource} permitted for {:?} by RBAC",
                    requester.cn
                )))
            } else {
                Ok(Verdict::Leave(format!(
                    "{:?} may not create certificatesigningrequests/{subresource}",
                    requester.cn
                )))
            }
        }
        signers::KUBELET_SERVING => {
            let Some(node) = examined.cn.strip_prefix(NODE_USER_PREFIX) else {
                return Ok(Verdict::Leave("CN is not system:node:<name>".into()));
            };
            if requester.cn != examined.cn || !groups.iter().any(|g| g == NODES_GROUP) {
                return Ok(Verdict::Leave(format!(
                    "requester {:?} is not node {node:?} itself",
                    requester.cn
                )));
            }
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            let Some(n) = nodes.get_opt(node).await? else {
                return Ok(Verdict::Leave(format!("no Node object {node:?}")));
            };
            let addresses = n.status.and_then(|s| s.addresses).unwrap_or_default();
            Ok(match foreign_san(&examined, &addresses) {
                None => Verdict::Approve(format!("kpki: every SAN is an address of Node {node:?}")),
                Some(san) => Verdict::Leave(format!("{san} is not an address of Node {node:?}")),
            })
        }
        other => Ok(Verdict::Leave(format!("{other} is not approved by rule"))),
    }
}

/// Which `certificatesigningrequests/…` subresource RBAC must grant for a kubelet client
/// request: `nodeclient` for a bootstrap token, `selfnodeclient` for the node renewing its
/// own; none for anyone else.
pub(crate) fn client_subresource(
    requester: &str,
    groups: &[String],
    cn: &str,
) -> Option<&'static str> {
    if groups.iter().any(|g| g == SYSTEM_BOOTSTRAPPERS) {
        Some("nodeclient")
    } else if requester == cn && groups.iter().any(|g| g == NODES_GROUP) {
        Some("selfnodeclient")
    } else {
        None
    }
}

/// The first SAN that is not one of the Node's addresses (or a SAN kind a serving
/// certificate of a node never carries); `None` when all are the node's.
pub(crate) fn foreign_san(examined: &Examined, addresses: &[NodeAddress]) -> Option<String> {
    let of = |kinds: &[&str]| -> Vec<&str> {
        addresses
            .iter()
            .filter(|a| kinds.contains(&a.type_.as_str()))
            .map(|a| a.address.as_str())
            .collect()
    };
    let names = of(&["Hostname", "InternalDNS", "ExternalDNS"]);
    let ips: Vec<IpAddr> = of(&["InternalIP", "ExternalIP"])
        .into_iter()
        .filter_map(|a| a.parse().ok())
        .collect();
    if let Some(d) = examined.dns.iter().find(|d| !names.contains(&d.as_str())) {
        return Some(format!("DNS:{d}"));
    }
    if let Some(ip) = examined.ips.iter().find(|ip| !ips.contains(ip)) {
        return Some(format!("IP:{ip}"));
    }
    if let Some(e) = examined.emails.first() {
        return Some(format!("email:{e}"));
    }
    examined.uris.first().map(|u| format!("URI:{u}"))
}

/// Asks the API server whether the requester may create the subresource (as upstream's
/// csrapproving does).
async fn may_create(
    ctx: &Ctx,
    object: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, ReconcileError> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: object.spec.username.clone(),
            groups: object.spec.groups.clone(),
            uid: object.spec.uid.clone(),
            extra: object.spec.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("certificates.k8s.io".into()),
                resource: Some("certificatesigningrequests".into()),
                subresource: Some(subresource.into()),
                verb: Some("create".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn audit(
    object: &CertificateSigningRequest,
    ctx: &Ctx,
    verdict: &Verdict,
) -> Result<(), ReconcileError> {
    let requester = object::requester(object);
    let (decision, reason) = match verdict {
        Verdict::Approve(m) => (Decision::Allow, m.clone()),
        Verdict::Leave(r) => (Decision::Deny, r.clone()),
    };
    let record = Record {
        caller: Some(audit::Caller {
            cn: requester.cn,
            orgs: requester.orgs,
        }),
        endpoint: Some("controller".into()),
        request_sha256: Some(object::request_sha256(object)),
        signer_name: Some(object.spec.signer_name.clone()),
        decision: Some(decision),
        reason: Some(reason),
        csr: Some(object::reference(object)),
        ..Record::new(Event::Approval)
    };
    crate::issue::append_audit(&ctx.app, record)
        .map_err(|e| ReconcileError::Unavailable(format!("audit write failed: {e}")))
}

/// Adds the `Approved` condition through the `/approval` subresource; on a conflict the
/// object is read again and approved only if still pending.
async fn write_approval(
    object: &CertificateSigningRequest,
    ctx: &Ctx,
    message: &str,
) -> Result<bool, ReconcileError> {
    let name = object.name_any();
    let mut current = object.clone();
    for _ in 0..5 {
        let mut next = current.clone();
        next.status
            .get_or_insert_with(Default::default)
            .conditions
            .get_or_insert_with(Vec::new)
            .push(condition("Approved", "AutoApproved", message.into()));
        match ctx
            .api
            .replace_subresource("approval", &name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
            Err(kube::Error::Api(e)) if e.code == 409 => match ctx.api.get(&name).await {
                Ok(fresh) if stage(&fresh) == Stage::AwaitingApproval => current = fresh,
                Ok(_) => return Ok(false),
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        }
    }
    Err(ReconcileError::Conflicts(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examined(dns: &[&str], ips: &[&str], emails: &[&str], uris: &[&str]) -> Examined {
        Examined {
            subject: Default::default(),
            orgs: vec![NODES_GROUP.into()],
            cn: "system:node:n1".into(),
            dns: dns.iter().map(|s| s.to_string()).collect(),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            emails: emails.iter().map(|s| s.to_string()).collect(),
            uris: uris.iter().map(|s| s.to_string()).collect(),
            key: "ECDSA-P256".into(),
            usages: vec![],
            spki_der: vec![],
        }
    }

    fn addr(t: &str, a: &str) -> NodeAddress {
        NodeAddress {
            type_: t.into(),
            address: a.into(),
        }
    }

    #[test]
    fn serving_sans_must_be_the_nodes_own_addresses() {
        let node = [
            addr("Hostname", "n1"),
            addr("InternalDNS", "n1.internal"),
            addr("ExternalDNS", "n1.example.com"),
            addr("InternalIP", "10.0.0.5"),
            addr("ExternalIP", "2001:db8::5"),
        ];
        type Sans<'a> = (&'a [&'a str], &'a [&'a str], &'a [&'a str], &'a [&'a str]);
        let cases: &[(Sans, Option<&str>)] = &[
            ((&["n1"], &["10.0.0.5"], &[], &[]), None),
            (
                (
                    &["n1", "n1.internal", "n1.example.com"],
                    &["10.0.0.5", "2001:db8::5"],
                    &[],
                    &[],
                ),
                None,
            ),
            ((&[], &["10.0.0.5"], &[], &[]), None),
            ((&["n2"], &["10.0.0.5"], &[], &[]), Some("DNS:n2")),
            ((&["n1"], &["10.0.0.6"], &[], &[]), Some("IP:10.0.0.6")),
            ((&["N1"], &[], &[], &[]), Some("DNS:N1")),
            ((&["10.0.0.5"], &[], &[], &[]), Some("DNS:10.0.0.5")),
            ((&[], &["2001:db8::6"], &[], &[]), Some("IP:2001:db8::6")),
            ((&["n1"], &[], &["a@n1"], &[]), Some("email:a@n1")),
            (
                (&["n1"], &[], &[], &["spiffe://n1"]),
                Some("URI:spiffe://n1"),
            ),
        ];
        for ((dns, ips, emails, uris), want) in cases {
            let got = foreign_san(&examined(dns, ips, emails, uris), &node);
            assert_eq!(got.as_deref(), *want, "{dns:?} {ips:?} {emails:?} {uris:?}");
        }
        // A Node without addresses owns no SAN.
        assert_eq!(
            foreign_san(&examined(&["n1"], &[], &[], &[]), &[]).as_deref(),
            Some("DNS:n1")
        );
    }

    #[test]
    fn kubelet_client_requests_need_a_bootstrap_token_or_the_node_itself() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&str, &[&str], &str, Option<&str>)] = &[
            (
                "system:bootstrap:abcdef",
                &[
                    "system:bootstrappers",
                    "system:bootstrappers:kubeadm:default-node-token",
                ],
                "system:node:n1",
                Some("nodeclient"),
            ),
            (
                "system:node:n1",
                &["system:nodes", "system:authenticated"],
                "system:node:n1",
                Some("selfnodeclient"),
            ),
            ("system:node:n2", &["system:nodes"], "system:node:n1", None),
            (
                "system:node:n1",
                &["system:authenticated"],
                "system:node:n1",
                None,
            ),
            ("jane", &["dev"], "system:node:n1", None),
            (
                "kubernetes-admin",
                &["kubeadm:cluster-admins"],
                "system:node:n1",
                None,
            ),
        ];
        for (requester, groups, cn, want) in cases {
            assert_eq!(
                client_subresource(requester, &g(groups), cn),
                *want,
                "{requester} {groups:?}"
            );
        }
    }
}
