//! Failpoints of `serve` in builds that compile them in (feature `failpoints`): those named in
//! `FAILPOINTS` fire from the start, and those in the file `FAILPOINTS_FILE` names are armed,
//! changed and disarmed while the member runs (the file is read every 100 ms), so a test can
//! stall the disk of whichever member leads now, or crash it inside a given step.
//!
//! Both take `name=action` entries separated by `;` or new lines (the `fail` crate's actions:
//! `return`, `panic`, `sleep(ms)`, `20*off->return`, ...). Builds without failpoints refuse
//! either variable rather than ignore it. This module never arms anything the environment did
//! not name.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// How often the file is read.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The largest file read; larger ones are refused whole.
const FILE_BYTES_MAX: u64 = 64 << 10;

/// Arms what `FAILPOINTS` names and starts following `FAILPOINTS_FILE`.
pub fn arm_from_env() -> Result<(), String> {
    let spec = std::env::var("FAILPOINTS").ok();
    let file = std::env::var_os("FAILPOINTS_FILE").map(PathBuf::from);
    if (spec.is_some() || file.is_some()) && !quorumkv_server::FAILPOINTS_COMPILED {
        return Err(
            "FAILPOINTS or FAILPOINTS_FILE is set but this build has no failpoints \
                    (build with --features failpoints)"
                .into(),
        );
    }
    if let Some(spec) = spec {
        for (name, action) in parse(&spec).map_err(|e| format!("FAILPOINTS: {e}"))? {
            fail::cfg(&name, &action).map_err(|e| format!("FAILPOINTS: {name}: {e}"))?;
        }
    }
    if let Some(path) = file {
        let mut armed = BTreeMap::new();
        follow(&path, &mut armed);
        std::thread::Builder::new()
            .name("failpoints".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(POLL_INTERVAL);
                    follow(&path, &mut armed);
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Brings the armed failpoints in line with the file: new or changed entries armed, removed
/// ones disarmed. A missing file arms nothing; a bad one is reported and changes nothing.
fn follow(path: &std::path::Path, armed: &mut BTreeMap<String, String>) {
    let text = match std::fs::metadata(path) {
        Ok(m) if m.len() > FILE_BYTES_MAX => {
            tracing::warn!(path = %path.display(), "failpoints file too large; ignored");
            return;
        }
        Ok(_) => std::fs::read_to_string(path).unwrap_or_default(),
        Err(_) => String::new(),
    };
    let wanted = match parse(&text) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "failpoints file ignored");
            return;
        }
    };
    armed.retain(|name, _| {
        let keep = wanted.contains_key(name);
        if !keep {
            fail::remove(name);
            tracing::warn!(failpoint = %name, "failpoint disarmed");
        }
        keep
    });
    for (name, action) in wanted {
        if armed.get(&name) == Some(&action) {
            continue;
        }
        match fail::cfg(&name, &action) {
            Ok(()) => {
                tracing::warn!(failpoint = %name, action = %action, "failpoint armed");
                armed.insert(name, action);
            }
            Err(e) => tracing::warn!(failpoint = %name, error = %e, "failpoint refused"),
        }
    }
}

/// `name=action` entries separated by `;` or new lines.
fn parse(spec: &str) -> Result<BTreeMap<String, String>, String> {
    spec.split([';', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.split_once('=')
                .map(|(n, a)| (n.trim().to_string(), a.trim().to_string()))
                .ok_or_else(|| format!("{p:?} is not name=action"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_on_semicolons_and_lines() {
        let got = parse("a=return;\n b = sleep(10) \n\n").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got["b"], "sleep(10)");
        assert!(parse("nonsense").is_err());
    }
}
