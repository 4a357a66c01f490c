//! Replays every committed fuzz seed and crash regression through the same property checks
//! the fuzz targets run (`capsign::fuzzing`), on stable, in a plain `cargo test`.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.unwrap().path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if path.is_file() && !hidden {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "no seeds for {target}");
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("fuzz input {} breaks a property", path.display());
        }
    }
}

#[test]
fn grant_cookie_seeds_and_regressions() {
    replay("grant_cookie", capsign::fuzzing::grant_cookie);
}

#[test]
fn capability_seeds_and_regressions() {
    replay("capability", capsign::fuzzing::capability);
}

#[test]
fn rules_seeds_and_regressions() {
    replay("rules", capsign::fuzzing::rules);
}

#[test]
fn auth_request_seeds_and_regressions() {
    replay("auth_request", capsign::fuzzing::auth_request);
}

#[test]
fn webhook_answer_seeds_and_regressions() {
    replay("webhook_answer", capsign::fuzzing::webhook_answer);
}

#[test]
fn jwks_seeds_and_regressions() {
    replay("jwks", capsign::fuzzing::jwks);
}

#[test]
fn hs256_seeds_and_regressions() {
    replay("hs256", capsign::fuzzing::hs256);
}
