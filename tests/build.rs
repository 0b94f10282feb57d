//! Generates a gRPC client for the ExternalJWTSigner service (packages v1 and v1alpha1) from
//! this crate's own copy of the published definition, independently of the server's code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    let include = include
        .to_str()
        .ok_or("the vendored protoc include path is not UTF-8")?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_with_config(
            config,
            &["proto/v1/api.proto", "proto/v1alpha1/api.proto"],
            &["proto", include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
