//! Compiles the ledger proto with a vendored `protoc`, so building needs no
//! system protobuf install, and emits the descriptor set for reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Passing the path to prost's config rather than setting `PROTOC`: the
    // workspace forbids `unsafe`, and `set_var` is unsafe in edition 2024.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ledger_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("proto/berth/availability/v1/ledger.proto")],
            &[PathBuf::from("proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds these; new files must trigger a rebuild.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
