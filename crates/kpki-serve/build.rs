//! Generates the ExternalJWTSigner gRPC server code (packages v1 and v1alpha1) with the
//! vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    let include = include
        .to_str()
        .ok_or("the vendored protoc include path is not UTF-8")?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_with_config(
            config,
            &["proto/v1/api.proto", "proto/v1alpha1/api.proto"],
            &["proto", include],
        )?;
    println!("cargo:rerun-if-changed=proto");
    git_commit();
    Ok(())
}

/// `KPKI_GIT_COMMIT`: the commit the crate is built from (`kpki_build_info`), or `unknown`
/// outside a git checkout; rebuilt when HEAD moves.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("KPKI_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KPKI_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=KPKI_GIT_COMMIT");
    for path in ["HEAD", "refs/heads"] {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
