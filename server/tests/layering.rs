//! The server's folders import only downwards: `etcd/` and `zk/` build on `member/`,
//! which builds on `node/`, `transport/` and `mvcc/`. Nothing below a client API names it, its
//! gRPC framework or its wire types. Read from the source files themselves, comments aside.

use std::path::{Path, PathBuf};

/// Folders of `server/src` and what none of their code may name.
const RULES: &[(&str, &[&str])] = &[
    // The core encodes its own log envelope with prost, but never an API's messages.
    (
        "member",
        &["crate::etcd", "crate::zk", "tonic", "crate::pb"],
    ),
    // Client APIs are siblings: ZooKeeper's builds on the core, never on etcd's.
    ("zk", &["crate::etcd", "crate::pb::etcdserverpb"]),
    (
        "mvcc",
        &[
            "crate::etcd",
            "crate::zk",
            "crate::member",
            "tonic",
            "crate::pb",
        ],
    ),
    (
        "node",
        &[
            "crate::etcd",
            "crate::zk",
            "crate::member",
            "tonic",
            "crate::pb",
        ],
    ),
    (
        "transport",
        &[
            "crate::etcd",
            "crate::zk",
            "crate::member",
            "crate::node",
            "tonic",
            "crate::pb",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `source` without its comments (line comments and doc comments), so prose may name anything.
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every forbidden name each folder's code mentions, as `file: name`.
fn violations(src: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (folder, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        assert!(!files.is_empty(), "no sources under {folder}/");
        for f in files {
            let code = code_of(&std::fs::read_to_string(&f).unwrap());
            for name in *forbidden {
                let hit = code.match_indices(name).any(|(i, _)| {
                    // A whole path segment: `tonic` but not `tonic_free`, `crate::pb` but not
                    // `crate::pbx`.
                    let next = code[i + name.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                if hit {
                    found.push(format!("{}: {name}", f.display()));
                }
            }
        }
    }
    found
}

#[test]
fn lower_layers_never_name_a_client_api() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(
        found.is_empty(),
        "imports against the layering:\n{}",
        found.join("\n")
    );
}

/// The check bites: a copy of `member/` that imports the etcd personality is caught.
#[test]
fn a_member_file_naming_etcd_is_caught() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tmp = tempfile::tempdir().unwrap();
    for folder in ["member", "mvcc", "node", "transport", "zk"] {
        let mut files = Vec::new();
        rust_files(&src.join(folder), &mut files);
        for f in files {
            let to = tmp.path().join(f.strip_prefix(&src).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&f, &to).unwrap();
        }
    }
    assert!(violations(tmp.path()).is_empty());
    std::fs::write(
        tmp.path().join("member/bad.rs"),
        "// crate::etcd in a comment is fine\nuse crate::etcd::KvServer;\nuse tonic::Status;\n",
    )
    .unwrap();
    let found = violations(tmp.path());
    assert_eq!(found.len(), 2, "{found:?}");
}
