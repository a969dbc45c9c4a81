//! Compiles the settlement proto with a vendored `protoc` (no system
//! protobuf install needed) and emits the descriptor set for reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // The path goes to prost's config rather than `PROTOC`: `set_var` is
    // unsafe in edition 2024 and the workspace forbids `unsafe`.
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let well_known = protoc_bin_vendored::include_path()?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("settlement_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("proto/berth/booking/v1/settlement.proto")],
            &[PathBuf::from("proto"), well_known],
        )?;
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds these; new files must trigger a rebuild.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
