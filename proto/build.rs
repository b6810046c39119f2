//! Generates the Rust types and tonic services from the `.proto` contracts.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "kafscale/metadata/v1/metadata.proto",
        "kafscale/data/v1/data.proto",
        "kafscale/groups/v1/groups.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&protos, &["."])?;
    Ok(())
}
