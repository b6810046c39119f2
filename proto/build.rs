//! Generates the Rust types and tonic services from the `.proto` contracts.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "kafscale/metadata/v1/metadata.proto",
        "kafscale/data/v1/data.proto",
        "kafscale/groups/v1/groups.proto",
        "kafscale/control/v1/control.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        // `kafscale ctl --json` prints control API answers as JSON.
        .type_attribute(".kafscale.control.v1", "#[derive(serde::Serialize)]")
        .compile_protos(&protos, &["."])?;
    Ok(())
}
