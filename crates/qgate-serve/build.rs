//! Generates the V2 gRPC service from proto/grpc_predict_v2.proto with the protoc that the
//! `protoc-bin-vendored` crate carries (from crates.io: the build needs no system protoc and
//! no network beyond the registry). A `PROTOC` in the environment wins (platforms without a
//! vendored binary).
fn main() {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        match protoc_bin_vendored::protoc_bin_path() {
            // Only this build script's process reads it (tonic-prost-build runs protoc).
            Ok(p) => std::env::set_var("PROTOC", p),
            Err(e) => {
                panic!("no vendored protoc for this platform ({e}); set PROTOC to a protoc binary")
            }
        }
    }
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/grpc_predict_v2.proto"], &["proto"])
    {
        panic!("cannot generate the gRPC service from proto/grpc_predict_v2.proto: {e}");
    }
}
