//! The generated protobuf types and gRPC stubs: etcd's v3 API (`etcdserverpb`, `mvccpb`,
//! `authpb`) and the log entry format of the key space (`quorumkv`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's `mvccpb`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}
/// etcd's `authpb`.
pub mod authpb {
    tonic::include_proto!("authpb");
}
/// etcd's `etcdserverpb`.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}
/// The replicated requests of the key space.
pub mod quorumkv {
    tonic::include_proto!("quorumkv");
}
