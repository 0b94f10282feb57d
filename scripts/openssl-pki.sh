#!/usr/bin/env bash
# Baseline for benches: the kubeadm PKI built with the OpenSSL CLI, one command per step, as
# an administrator following a "Kubernetes the hard way" course would.
#   usage: scripts/openssl-pki.sh RSA-2048|ECDSA-P256 DIR [NODE] [ADDRESS]
set -euo pipefail
alg=$1; d=$2; node=${3:-cp1}; addr=${4:-10.0.0.10}
p=$d/pki
mkdir -p "$p/etcd"

genkey() {
  if [ "$alg" = RSA-2048 ]; then openssl genrsa -out "$1" 2048 2>/dev/null; else openssl ecparam -name prime256v1 -genkey -noout -out "$1"; fi
  chmod 600 "$1"
}
ca() { # base cn
  genkey "$p/$1.key"
  openssl req -x509 -new -key "$p/$1.key" -subj "/CN=$2" -days 3650 -set_serial "0x$(openssl rand -hex 8)" \
    -addext "subjectAltName=DNS:$2" -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
    -addext "basicConstraints=critical,CA:TRUE" -out "$p/$1.crt"
}
leaf() { # out-base ca-base subject eku [san]
  genkey "$p/$1.key"
  openssl req -new -key "$p/$1.key" -subj "$3" -out "$p/$1.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$4"
    echo "authorityKeyIdentifier=keyid"
    [ -n "${5:-}" ] && echo "subjectAltName=$5"
  } >"$p/$1.ext"
  openssl x509 -req -in "$p/$1.csr" -CA "$p/$2.crt" -CAkey "$p/$2.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 365 -extfile "$p/$1.ext" -out "$p/$1.crt" 2>/dev/null
  rm -f "$p/$1.csr" "$p/$1.ext"
}
kubeconfig() { # file cn subject server
  leaf ".kc-$1" ca "$3" clientAuth
  cat >"$d/$1" <<YAML
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
    server: $4
  name: kubernetes
contexts:
- context:
    cluster: kubernetes
    user: $2
  name: $2@kubernetes
current-context: $2@kubernetes
kind: Config
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$p/.kc-$1.crt")
    client-key-data: $(base64 -w0 "$p/.kc-$1.key")
YAML
  chmod 600 "$d/$1"
  rm -f "$p/.kc-$1.crt" "$p/.kc-$1.key"
}

ca ca kubernetes
ca front-proxy-ca front-proxy-ca
ca etcd/ca etcd-ca
leaf apiserver ca "/CN=kube-apiserver" serverAuth \
  "DNS:$node,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1,IP:$addr"
leaf apiserver-kubelet-client ca "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client" clientAuth
leaf front-proxy-client front-proxy-ca "/CN=front-proxy-client" clientAuth
leaf etcd/server etcd/ca "/CN=$node" serverAuth,clientAuth "DNS:$node,DNS:localhost,IP:$addr,IP:127.0.0.1,IP:::1"
leaf etcd/peer etcd/ca "/CN=$node" serverAuth,clientAuth "DNS:$node,DNS:localhost,IP:$addr,IP:127.0.0.1,IP:::1"
leaf etcd/healthcheck-client etcd/ca "/CN=kube-etcd-healthcheck-client" clientAuth
leaf apiserver-etcd-client etcd/ca "/CN=kube-apiserver-etcd-client" clientAuth
genkey "$p/sa.key"
openssl pkey -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
server="https://$addr:6443"
kubeconfig admin.conf kubernetes-admin "/O=kubeadm:cluster-admins/CN=kubernetes-admin" "$server"
kubeconfig super-admin.conf kubernetes-super-admin "/O=system:masters/CN=kubernetes-super-admin" "$server"
kubeconfig controller-manager.conf system:kube-controller-manager "/CN=system:kube-controller-manager" "$server"
kubeconfig scheduler.conf system:kube-scheduler "/CN=system:kube-scheduler" "$server"
kubeconfig kubelet.conf system:node:$node "/O=system:nodes/CN=system:node:$node" "$server"
