//! Generates the gRPC client and server of the control plane with tonic. Messages are Rust
//! types carried by a JSON codec (`rpc::codec`), so there is no .proto and no protoc.

fn method(name: &str, route: &str, input: &str, output: &str) -> tonic_build::manual::MethodBuilder {
    tonic_build::manual::Method::builder()
        .name(name)
        .route_name(route)
        .input_type(format!("crate::rpc::messages::{input}"))
        .output_type(format!("crate::rpc::messages::{output}"))
        .codec_path("crate::rpc::codec::JsonCodec")
}

fn main() {
    let service = tonic_build::manual::Service::builder()
        .name("Control")
        .package("shoal.control")
        .method(method("join", "Join", "JoinRequest", "JoinResponse").build())
        .method(method("renew", "Renew", "RenewRequest", "RenewResponse").build())
        .method(method("raft", "Raft", "RaftRpc", "RaftReply").build())
        .method(method("api", "Api", "ApiRequest", "ApiResponse").build())
        .method(method("session", "Session", "AgentMessage", "SessionMessage").client_streaming().server_streaming().build())
        .build();
    tonic_build::manual::Builder::new().compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
