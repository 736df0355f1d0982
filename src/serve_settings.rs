//! Where `serve`'s settings come from, as with etcd:
//!
//! - With `--config-file` (or `ETCD_CONFIG_FILE`), a YAML file whose keys are the flags' names
//!   (`data-dir: /var/lib/etcd`) is the whole configuration: other flags and `ETCD_*`
//!   variables are ignored, and so are keys that name no flag (etcd's sample file carries
//!   settings such as `proxy` that mean nothing here).
//! - Otherwise the command line, then an `ETCD_<FLAG>` environment variable for each flag the
//!   command line does not give (`ETCD_DATA_DIR` for `--data-dir`; empty values are unset),
//!   then the defaults. A flag given both ways is refused, as etcd refuses it, and `ETCD_*`
//!   variables that name no flag are reported.
//!
//! Values from either source go through the same parser as the command line, so they are
//! checked the same way; an error names the variable or the file key it came from. This
//! module owns only that resolution: it never starts anything.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};
use yaml_rust2::{Yaml, YamlLoader};

use crate::serve_cmd::ServeArgs;

/// Prefix of the environment variables that set `serve`'s flags.
const ENV_PREFIX: &str = "ETCD_";

/// The flag naming the configuration file.
const CONFIG_FILE: &str = "config-file";

/// Largest configuration file read.
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Keys of etcd's configuration file that ask for TLS, which this server does not serve;
/// refused rather than ignored, so a member never serves plain text where TLS was asked for.
/// etcd's TLS sections of a configuration file, and the prefix of their settings' flags.
fn tls_section_prefix(key: &str) -> Option<&'static str> {
    match key {
        "client-transport-security" => Some(""),
        "peer-transport-security" => Some("peer-"),
        _ => None,
    }
}

/// `serve`'s resolved settings, and what resolving them found worth telling the operator
/// (printed once logging is set up).
#[derive(Debug)]
pub struct Settings {
    /// The flags in effect.
    pub args: ServeArgs,
    /// For the log at info: which source was used.
    pub notes: Vec<String>,
    /// For the log at warn: what was given but not used.
    pub warnings: Vec<String>,
}

impl Settings {
    /// Resolves the settings of `serve` from its command-line matches, the environment
    /// (`env`, as `std::env::vars_os` gives it) and, when one is named, a config file.
    pub fn resolve(matches: &ArgMatches, env: &[(OsString, OsString)]) -> Result<Settings, String> {
        let mut notes = Vec::new();
        let mut warnings = Vec::new();
        let from_cli = ServeArgs::from_arg_matches(matches).map_err(|e| e.to_string())?;
        let config_on_cli =
            matches.value_source(&id_of(CONFIG_FILE)) == Some(ValueSource::CommandLine);
        let config_in_env = lookup(env, &env_name(CONFIG_FILE));
        if config_on_cli && config_in_env.is_some() {
            return Err(conflict(&env_name(CONFIG_FILE)));
        }
        let config = from_cli
            .config_file
            .clone()
            .or_else(|| config_in_env.map(Into::into));
        if let Some(path) = config {
            notes.push(format!(
                "loading server configuration from {}; other configuration command line \
                 flags and environment variables are ignored",
                path.display()
            ));
            let (args, unused) = from_config_file(&path)?;
            return Ok(Settings {
                args,
                notes,
                warnings: unused,
            });
        }

        let command = serve_command();
        let mut extra: Vec<OsString> = Vec::new();
        let mut used: Vec<String> = Vec::new();
        for long in flag_names(&command) {
            let name = env_name(&long);
            let Some(value) = lookup(env, &name) else {
                continue;
            };
            if matches.value_source(&id_of(&long)) == Some(ValueSource::CommandLine) {
                return Err(conflict(&name));
            }
            let arg = flag_arg(&long, &value);
            // Checked alone first, so a bad value is reported against its variable.
            parse(&command, std::slice::from_ref(&arg))
                .map_err(|e| format!("invalid value {value:?} for {name}: {}", reason(&e)))?;
            notes.push(format!(
                "recognized and used environment variable {name}={value}"
            ));
            extra.push(arg);
            used.push(name);
        }
        for (key, value) in env {
            let Some(key) = key.to_str() else { continue };
            if key.starts_with(ENV_PREFIX) && !used.iter().any(|u| u == key) {
                let value = value.to_string_lossy();
                warnings.push(format!("unrecognized environment variable {key}={value}"));
            }
        }
        if extra.is_empty() {
            return Ok(Settings {
                args: from_cli,
                notes,
                warnings,
            });
        }
        // The command line's own flags, then the variables' (disjoint, checked above).
        let mut all: Vec<OsString> = command_line_flags(matches, &command);
        all.extend(extra);
        let args = parse(&command, &all).map_err(|e| e.to_string())?;
        Ok(Settings {
            args,
            notes,
            warnings,
        })
    }
}

/// `serve`'s flags as a command of their own, for parsing argument lists built here.
fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve").no_binary_name(true))
}

/// Parses `args` (flags only) as `serve`'s.
fn parse(command: &Command, args: &[OsString]) -> Result<ServeArgs, clap::Error> {
    let matches = command.clone().try_get_matches_from(args)?;
    ServeArgs::from_arg_matches(&matches)
}

/// A parse error's first line without clap's `error: ` prefix and usage hints.
fn reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Every long flag of `serve`.
fn flag_names(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| l != "help")
        .collect()
}

/// The clap id of the field behind `--long`.
fn id_of(long: &str) -> String {
    long.replace('-', "_")
}

/// `--data-dir` → `ETCD_DATA_DIR`.
fn env_name(long: &str) -> String {
    format!("{ENV_PREFIX}{}", long.replace('-', "_").to_uppercase())
}

/// `--long=value` as one argument (a value starting with `-` stays a value).
fn flag_arg(long: &str, value: &str) -> OsString {
    format!("--{long}={value}").into()
}

/// A set, non-empty variable's value.
fn lookup(env: &[(OsString, OsString)], name: &str) -> Option<String> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

fn conflict(name: &str) -> String {
    format!(
        "conflicting environment variable {name:?} is shadowed by corresponding command-line \
         flag (either unset environment variable or disable flag)"
    )
}

/// The flags the command line gave, rebuilt as `--long=value` arguments.
fn command_line_flags(matches: &ArgMatches, command: &Command) -> Vec<OsString> {
    let mut out = Vec::new();
    for long in flag_names(command) {
        let id = id_of(&long);
        if matches.value_source(&id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let values = matches
            .get_raw(&id)
            .into_iter()
            .flatten()
            .map(|v| v.to_string_lossy().into_owned());
        for v in values {
            out.push(flag_arg(&long, &v));
        }
    }
    out
}

/// Reads `serve`'s settings from an etcd-style YAML configuration file; with them, the keys
/// that were not used.
fn from_config_file(path: &Path) -> Result<(ServeArgs, Vec<String>), String> {
    let where_ = |e: &dyn std::fmt::Display| format!("config file {}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| where_(&e))?;
    if meta.len() > CONFIG_FILE_BYTES_MAX {
        return Err(where_(&format!(
            "{} bytes is over the {CONFIG_FILE_BYTES_MAX}-byte limit",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| where_(&e))?;
    let (args, notes) = from_yaml(&text).map_err(|e| where_(&e))?;
    Ok((args, notes))
}

/// Reads `serve`'s settings from the text of an etcd-style YAML configuration file; with
/// them, the keys that were not used.
fn from_yaml(text: &str) -> Result<(ServeArgs, Vec<String>), String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let command = serve_command();
    let known = flag_names(&command);
    let mut notes = Vec::new();
    let mut args = Vec::new();
    let Some(doc) = docs.first() else {
        return Ok((parse(&command, &[]).map_err(|e| e.to_string())?, notes));
    };
    let Yaml::Hash(map) = doc else {
        return Err("expected a mapping of settings at the top level".into());
    };
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            return Err(format!("setting names are strings, not {key:?}"));
        };
        if let Some(prefix) = tls_section_prefix(key) {
            // etcd's sections of the client and peer ports' TLS: each setting is the flag of
            // its name (with `peer-` before it in the peer section).
            let Yaml::Hash(section) = value else {
                continue;
            };
            for (name, v) in section {
                let (Some(name), Ok(Some(text))) = (name.as_str(), scalar_text(v)) else {
                    continue;
                };
                let flag = match name {
                    "cert-file" | "key-file" | "trusted-ca-file" | "client-cert-auth"
                    | "auto-tls" => format!("{prefix}{name}"),
                    "allowed-cn" if !prefix.is_empty() => "peer-cert-allowed-cn".to_string(),
                    _ => {
                        notes.push(format!("config file setting {key}.{name} is not used"));
                        continue;
                    }
                };
                let arg = flag_arg(&flag, &text);
                parse(&command, std::slice::from_ref(&arg)).map_err(|e| {
                    format!("invalid value {text:?} for {key}.{name}: {}", reason(&e))
                })?;
                args.push(arg);
            }
            continue;
        }
        if key == CONFIG_FILE || !known.iter().any(|k| k == key) {
            notes.push(format!("config file setting {key:?} is not used"));
            continue;
        }
        let Some(value) = scalar_text(value)
            .map_err(|what| format!("{key}: expected a value or a list of values, not {what}"))?
        else {
            continue; // empty: the default applies, as in etcd
        };
        let arg = flag_arg(key, &value);
        parse(&command, std::slice::from_ref(&arg))
            .map_err(|e| format!("invalid value {value:?} for {key}: {}", reason(&e)))?;
        args.push(arg);
    }
    let parsed = parse(&command, &args).map_err(|e| e.to_string())?;
    Ok((parsed, notes))
}

/// A setting's value as flag text: scalars as written, lists joined by commas (etcd's URL
/// lists); `None` when empty. The error names what the value is instead.
fn scalar_text(value: &Yaml) -> Result<Option<String>, &'static str> {
    let text = match value {
        Yaml::Null => return Ok(None),
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match scalar_text(item) {
                    Ok(Some(p)) => parts.push(p),
                    Ok(None) => {}
                    Err(_) => return Err("a list holding a list or a mapping"),
                }
            }
            parts.join(",")
        }
        Yaml::Hash(_) => return Err("a mapping"),
        _ => return Err("an alias or unreadable value"),
    };
    Ok((!text.is_empty()).then_some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> ArgMatches {
        serve_command().get_matches_from(args)
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn variables_fill_flags_the_command_line_leaves_out() {
        let s = Settings::resolve(
            &cli(&["--name", "a"]),
            &env(&[
                ("ETCD_DATA_DIR", "/tmp/x"),
                ("ETCD_HEARTBEAT_INTERVAL", "50"),
                ("ETCD_STRICT_RECONFIG_CHECK", "false"),
                ("ETCD_WAL_DIR", ""),
                ("ETCDCTL_API", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(s.args.name, "a");
        assert_eq!(s.args.data_dir, Path::new("/tmp/x"));
        assert_eq!(s.args.heartbeat_interval, 50);
        assert!(!s.args.strict_reconfig_check);
        assert_eq!(s.args.wal_dir, None, "an empty variable is unset");
        assert!(s.notes.iter().any(|n| n.contains("ETCD_DATA_DIR=/tmp/x")));
        assert!(
            !s.notes.iter().any(|n| n.contains("ETCDCTL_API")),
            "etcdctl's variables are not ours"
        );
    }

    /// The command line's flags survive the merge with variables, bare switches included.
    #[test]
    fn command_line_flags_keep_their_values_beside_variables() {
        let s = Settings::resolve(
            &cli(&[
                "--enable-pprof",
                "--strict-reconfig-check=false",
                "--initial-cluster=a=http://127.0.0.1:1,b=http://127.0.0.1:2",
                "--peer-auto-tls=false",
            ]),
            &env(&[("ETCD_NAME", "a")]),
        )
        .unwrap();
        assert_eq!(s.args.name, "a");
        assert!(s.args.enable_pprof);
        assert!(!s.args.strict_reconfig_check);
        assert_eq!(
            s.args.initial_cluster,
            "a=http://127.0.0.1:1,b=http://127.0.0.1:2"
        );
    }

    #[test]
    fn a_flag_given_both_ways_is_refused() {
        let e = Settings::resolve(&cli(&["--name", "a"]), &env(&[("ETCD_NAME", "b")])).unwrap_err();
        assert!(
            e.contains("conflicting environment variable \"ETCD_NAME\""),
            "{e}"
        );
    }

    #[test]
    fn bad_values_and_unknown_variables_are_named() {
        let e =
            Settings::resolve(&cli(&[]), &env(&[("ETCD_HEARTBEAT_INTERVAL", "abc")])).unwrap_err();
        assert!(
            e.starts_with("invalid value \"abc\" for ETCD_HEARTBEAT_INTERVAL"),
            "{e}"
        );
        let s = Settings::resolve(&cli(&[]), &env(&[("ETCD_BOGUS", "1")])).unwrap();
        assert!(
            s.warnings
                .iter()
                .any(|n| n == "unrecognized environment variable ETCD_BOGUS=1")
        );
    }

    #[test]
    fn a_config_file_reads_etcd_keys_and_ignores_the_rest() {
        let (args, notes) = from_yaml(
            "name: 'n1'\n\
             data-dir: /var/lib/q\n\
             wal-dir:\n\
             listen-client-urls: http://127.0.0.1:1,http://127.0.0.1:2\n\
             listen-peer-urls: [http://127.0.0.1:3]\n\
             heartbeat-interval: 50\n\
             strict-reconfig-check: false\n\
             auto-compaction-retention: \"1\"\n\
             logger: zap\n\
             log-outputs: [stderr]\n\
             proxy: 'off'\n\
             client-transport-security:\n  cert-file:\n  client-cert-auth: false\n",
        )
        .unwrap();
        assert_eq!(args.name, "n1");
        assert_eq!(args.data_dir, Path::new("/var/lib/q"));
        assert_eq!(args.wal_dir, None);
        assert_eq!(
            args.listen_client_urls,
            "http://127.0.0.1:1,http://127.0.0.1:2"
        );
        assert_eq!(args.listen_peer_urls, "http://127.0.0.1:3");
        assert_eq!(args.heartbeat_interval, 50);
        assert!(!args.strict_reconfig_check);
        assert_eq!(args.auto_compaction_retention, "1");
        assert_eq!(args.max_txn_ops, 128, "unset keys keep etcd's defaults");
        assert_eq!(args.logger, "zap");
        assert_eq!(args.log_outputs, "stderr");
        assert!(notes.iter().any(|n| n.contains("\"proxy\"")));
    }

    /// A file laid out as etcd's sample configuration: every key etcd 3.4 documents there,
    /// TLS sections left empty.
    #[test]
    fn a_file_shaped_like_etcds_sample_configuration_is_taken() {
        let (args, unused) = from_yaml(
            "name: 'default'\ndata-dir:\nwal-dir:\nsnapshot-count: 10000\n\
             heartbeat-interval: 100\nelection-timeout: 1000\nquota-backend-bytes: 0\n\
             listen-peer-urls: http://localhost:2380\nlisten-client-urls: http://localhost:2379\n\
             max-snapshots: 5\nmax-wals: 5\ncors:\n\
             initial-advertise-peer-urls: http://localhost:2380\n\
             advertise-client-urls: http://localhost:2379\ndiscovery:\n\
             discovery-fallback: 'proxy'\ndiscovery-proxy:\ndiscovery-srv:\ninitial-cluster:\n\
             initial-cluster-token: 'etcd-cluster'\ninitial-cluster-state: 'new'\n\
             strict-reconfig-check: false\nenable-v2: true\nenable-pprof: true\nproxy: 'off'\n\
             proxy-failure-wait: 5000\nproxy-refresh-interval: 30000\nproxy-dial-timeout: 1000\n\
             proxy-write-timeout: 5000\nproxy-read-timeout: 0\n\
             client-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n\
             \x20 trusted-ca-file:\n  auto-tls: false\n\
             peer-transport-security:\n  cert-file:\n  key-file:\n  client-cert-auth: false\n\
             \x20 trusted-ca-file:\n  auto-tls: false\n\
             log-level: debug\nlogger: zap\nlog-outputs: [stderr]\nforce-new-cluster: false\n\
             auto-compaction-mode: periodic\nauto-compaction-retention: \"1\"\n\
             cipher-suites: [\n  TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n]\n",
        )
        .unwrap();
        assert_eq!(args.snapshot_count, 10_000);
        assert_eq!(args.listen_client_urls, "http://localhost:2379");
        assert_eq!(args.log_level, "debug");
        assert!(args.enable_v2 && args.enable_pprof);
        assert!(!args.strict_reconfig_check);
        assert_eq!(args.auto_compaction_mode, "periodic");
        assert_eq!(
            args.tls.cipher_suites,
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
        );
        for key in ["proxy", "cors", "max-wals", "force-new-cluster"] {
            let note = format!("config file setting {key:?} is not used");
            assert!(unused.contains(&note), "{key} not reported: {unused:?}");
        }
    }

    #[test]
    fn config_file_errors_name_the_key() {
        let e = from_yaml("heartbeat-interval: soon\n").unwrap_err();
        assert!(
            e.starts_with("invalid value \"soon\" for heartbeat-interval"),
            "{e}"
        );
        let e = from_yaml("name:\n  first: a\n").unwrap_err();
        assert!(e.starts_with("name: expected a value"), "{e}");
        let e = from_yaml("- a\n- b\n").unwrap_err();
        assert!(e.contains("mapping"), "{e}");
        let (args, notes) = from_yaml(
            "peer-transport-security:\n  cert-file: /etc/c.pem\n  key-file: /etc/k.pem\n  \
             client-cert-auth: true\n  allowed-cn: m1\n  crl-file: /x\n",
        )
        .unwrap();
        assert_eq!(args.tls.peer_cert_file, "/etc/c.pem");
        assert_eq!(args.tls.peer_key_file, "/etc/k.pem");
        assert!(args.tls.peer_client_cert_auth);
        assert_eq!(args.tls.peer_cert_allowed_cn, "m1");
        assert!(notes.iter().any(|n| n.contains("crl-file")), "{notes:?}");
        let (args, _) =
            from_yaml("client-transport-security:\n  cert-file: /etc/c.pem\n  auto-tls: true\n")
                .unwrap();
        assert!(args.tls.auto_tls && args.tls.peer_cert_file.is_empty());
        assert!(from_yaml("name: [unclosed\n").is_err());
        let (args, _) = from_yaml("").unwrap();
        assert_eq!(args.name, "default");
    }

    #[test]
    fn a_config_file_overrides_flags_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etcd.yml");
        std::fs::write(&path, "name: from-file\n").unwrap();
        let s = Settings::resolve(
            &cli(&[
                "--name",
                "from-flag",
                "--config-file",
                path.to_str().unwrap(),
            ]),
            &env(&[("ETCD_DATA_DIR", "/elsewhere")]),
        )
        .unwrap();
        assert_eq!(s.args.name, "from-file");
        assert_eq!(s.args.data_dir, Path::new("quorumkv-data"));
        let s = Settings::resolve(
            &cli(&[]),
            &env(&[("ETCD_CONFIG_FILE", path.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(s.args.name, "from-file");
        let e = Settings::resolve(&cli(&["--config-file", "/nonexistent/etcd.yml"]), &env(&[]))
            .unwrap_err();
        assert!(e.starts_with("config file /nonexistent/etcd.yml:"), "{e}");
    }
}
