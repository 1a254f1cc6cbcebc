//! Generates the KServe v2 gRPC client (`remote`) from proto/kserve_v2.proto.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    println!("cargo:rerun-if-changed=proto/kserve_v2.proto");
    tonic_build::configure().build_server(false).compile_protos(&["proto/kserve_v2.proto"], &["proto"])?;
    Ok(())
}
