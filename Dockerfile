# kpki container image: the `kpki` binary on Debian slim, running as uid/gid 10001 (the
# user deploy/kubernetes/30-deployment.yaml runs as).
#
#   docker build -t registry.example.com/kpki:0.1.0 .
#   docker build --build-arg WITH_SOFTHSM=true -t kpki:0.1.0-softhsm .   # + SoftHSMv2 (tests, demos)
#
# A network HSM's PKCS#11 module is the vendor's: add it in an image built FROM this one
# (COPY the module to the path serve.toml's module-path names, e.g.
# /usr/lib/pkcs11/hsm-vendor-pkcs11.so).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# aws-lc-sys builds its C sources with cmake.
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kpki \
    && install -m 0755 target/release/kpki /usr/local/bin/kpki \
    && /usr/local/bin/kpki --version

FROM debian:${DEBIAN_RELEASE}-slim
ARG WITH_SOFTHSM=false
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && if [ "$WITH_SOFTHSM" = "true" ]; then \
         apt-get install -y --no-install-recommends softhsm2 \
         && mkdir -p /var/lib/kpki/softhsm/tokens \
         && printf 'directories.tokendir = /var/lib/kpki/softhsm/tokens\nobjectstore.backend = file\n' \
              > /etc/kpki-softhsm2.conf \
         && chown -R 10001:10001 /var/lib/kpki; \
       fi \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kpki \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
         --shell /usr/sbin/nologin kpki
COPY --from=build /usr/local/bin/kpki /usr/local/bin/kpki
COPY LICENSE /usr/share/doc/kpki/copyright
# Used only when SoftHSM is installed (WITH_SOFTHSM=true); harmless otherwise.
ENV SOFTHSM2_CONF=/etc/kpki-softhsm2.conf
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/kpki"]
CMD ["serve", "--config", "/etc/kpki/config/serve.toml", "--log-format", "json"]
