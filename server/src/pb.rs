//! The generated protobuf types and gRPC stubs: etcd's v3 API (`etcdserverpb`, `mvccpb`,
//! `authpb`) and the log entry format of the key space (`quorumkv`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// etcd's `mvccpb`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}
/// etcd's `authpb`.
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}
/// etcd's `etcdserverpb`.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}
/// The replicated requests of the key space.
pub mod quorumkv {
    tonic::include_proto!("quorumkv");
}
