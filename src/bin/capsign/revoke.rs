//! `capsign revoke`: revokes a client's (or a revocation key's) tokens at Ably, and writes the
//! matching entry of capsign's revocation list, so no instance hands the same grants back from
//! the client's cookie.

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use capsign::ably::{AblyError, AblyRest, Revoked};
use capsign::capability::Resource;
use capsign::client::HttpClient;
use capsign::revocation::{EntryDoc, ListDoc};
use capsign::settings::{Location, Settings};

/// What to revoke, from the command line.
pub(crate) struct Revoke {
    /// clientIds.
    pub(crate) client_ids: Vec<String>,
    /// Revocation keys (the `x-ably-revocation-key` claim).
    pub(crate) revocation_keys: Vec<String>,
    /// Only these resources in capsign's list (Ably revokes whole tokens).
    pub(crate) resources: Vec<String>,
    /// Ably's `allowReauthMargin`: enforced 30 s later, connections asked to re-authenticate.
    pub(crate) allow_reauth_margin: bool,
    /// Only capsign's list (a key without revocable tokens: existing tokens live on until
    /// they expire, no instance renews them).
    pub(crate) list_only: bool,
    /// Revoke at Ably right after writing the list file, without waiting one refresh
    /// interval for the instances to read it.
    pub(crate) no_wait: bool,
}

/// Ably codes meaning the key cannot revoke.
const NOT_REVOCABLE: [u32; 3] = [40121, 40163, 40164];

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("capsign revoke: {message}");
    ExitCode::from(code)
}

/// Runs `capsign revoke`: 0 when every target was revoked and the list written, 1 when Ably
/// refused or could not be reached (the list keeps entries only for the targets Ably revoked),
/// 2 on a usage or configuration error (nothing done).
pub(crate) fn run(config: Option<&Path>, what: &Revoke) -> ExitCode {
    let settings = match Settings::from_process(config) {
        Ok(s) => s,
        Err(e) => return fail(2, &format!("configuration error: {e}")),
    };
    if settings
        .demo_defaults
        .iter()
        .any(|d| d.contains("ABLY_API_KEY") || d.contains("Ably key"))
    {
        return fail(
            2,
            "set ABLY_API_KEY: demo mode has no Ably key to revoke with",
        );
    }
    if what.client_ids.is_empty() && what.revocation_keys.is_empty() {
        return fail(2, "name at least one --client-id or --revocation-key");
    }
    for r in &what.resources {
        if let Err(e) = Resource::new(r) {
            return fail(2, &format!("--resource {r:?}: {e}"));
        }
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    // A whole second: JWTs say when they were issued in seconds, so a revocation at a whole
    // second is one a fresh credential can be seen to postdate.
    let issued_before = now_ms / 1000 * 1000;
    // The list is read before anything is revoked, so a malformed one stops the command with
    // nothing done.
    let list_file = match &settings.revocation.list {
        Some(Location::File(path)) => match ListFile::read(path) {
            Ok(file) => Some(file),
            Err(e) => return fail(2, &e),
        },
        _ => None,
    };
    let targets: Vec<(String, EntryDoc)> = what
        .client_ids
        .iter()
        .map(|id| (format!("clientId:{id}"), entry(Some(id), None, what)))
        .chain(
            what.revocation_keys
                .iter()
                .map(|k| (format!("revocationKey:{k}"), entry(None, Some(k), what))),
        )
        .collect();
    if what.list_only {
        let entries = targets
            .into_iter()
            .map(|(_, e)| EntryDoc {
                before: issued_before,
                ..e
            })
            .collect();
        return match publish(list_file.as_ref(), entries, &settings, now_ms) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(1, &e),
        };
    }
    // A list file gets the entries first, and every instance gets one refresh interval to read
    // it, before Ably disconnects anyone: the client's next request then finds its grants
    // revoked on whichever instance it reaches, and its fresh credential is issued after the
    // revocation. (A list at a URL is published by the app: see docs/revocation.md.)
    let all: Vec<EntryDoc> = targets
        .iter()
        .map(|(_, e)| EntryDoc {
            before: issued_before,
            ..e.clone()
        })
        .collect();
    if list_file.is_some() {
        if let Err(e) = publish(list_file.as_ref(), all.clone(), &settings, now_ms) {
            return fail(1, &format!("{e}; nothing was revoked"));
        }
        if !what.no_wait {
            let wait = settings.revocation.refresh + std::time::Duration::from_secs(1);
            eprintln!(
                "capsign revoke: waiting {} for every instance to read the list, then revoking at \
                 Ably",
                humantime::format_duration(wait)
            );
            std::thread::sleep(wait);
        }
    }
    let names: Vec<String> = targets.iter().map(|(t, _)| t.clone()).collect();
    let answers = match ask_ably(&settings, &names, issued_before, what.allow_reauth_margin) {
        Ok(a) => a,
        Err(e) => {
            // Nothing was revoked at Ably: the list goes back to what it was.
            if let Some(file) = &list_file {
                if let Err(w) = file.restore() {
                    eprintln!("capsign revoke: {w}");
                }
            }
            return fail(1, &explain(&e, &settings));
        }
    };
    let mut kept = Vec::new();
    for answer in answers {
        match answer {
            Revoked::Done {
                target,
                issued_before,
                applies_at,
            } => {
                println!(
                    "{target}: revoked at Ably: tokens issued before {} are refused from {}",
                    humantime::format_rfc3339_millis(ms_time(issued_before)),
                    humantime::format_rfc3339_millis(ms_time(applies_at)),
                );
                kept.extend(
                    targets
                        .iter()
                        .zip(&all)
                        .filter(|((t, _), _)| *t == target)
                        .map(|(_, e)| e.clone()),
                );
            }
            Revoked::Failed {
                target,
                code,
                message,
            } => println!("{target}: refused by Ably: {code} {message}"),
        }
    }
    let failed = kept.len() < all.len();
    if let Some(file) = &list_file {
        if failed {
            // Only the entries Ably accepted stay.
            if let Err(e) = write_list(&file.path, &file.with(kept, &settings, now_ms)) {
                return fail(1, &e);
            }
        }
    } else if let Err(e) = publish(None, kept, &settings, now_ms) {
        return fail(1, &e);
    }
    if failed {
        eprintln!(
            "capsign revoke: some targets were refused; the list has entries only for the others"
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn entry(client_id: Option<&String>, key: Option<&String>, what: &Revoke) -> EntryDoc {
    EntryDoc {
        client_id: client_id.cloned(),
        revocation_key: key.cloned(),
        before: 0,
        resources: (!what.resources.is_empty()).then(|| what.resources.clone()),
    }
}

fn ms_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// The list file as it is: its document and its bytes (`None`: it does not exist yet, and
/// starts empty), so a failed revocation can put it back exactly.
struct ListFile {
    path: std::path::PathBuf,
    doc: ListDoc,
    original: Option<Vec<u8>>,
}

impl ListFile {
    fn read(path: &Path) -> Result<ListFile, String> {
        let (doc, original) = match std::fs::read(path) {
            Ok(bytes) => (
                ListDoc::parse(&bytes).map_err(|e| {
                    format!(
                        "{}: {e}; fix the list first (nothing was revoked)",
                        path.display()
                    )
                })?,
                Some(bytes),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (ListDoc::default(), None),
            Err(e) => return Err(format!("{}: {e} (nothing was revoked)", path.display())),
        };
        Ok(ListFile {
            path: path.to_owned(),
            doc,
            original,
        })
    }

    /// The list as it was read, with `entries` added and the entries too old to matter
    /// dropped.
    fn with(&self, entries: Vec<EntryDoc>, settings: &Settings, now_ms: u64) -> ListDoc {
        let mut doc = self.doc.clone();
        let max_age_ms = settings.flow.grant_max_age_s.saturating_mul(1000);
        doc.drop_older_than(now_ms.saturating_sub(max_age_ms));
        doc.revocations.extend(entries);
        doc
    }

    /// Puts the file back as it was read.
    fn restore(&self) -> Result<(), String> {
        let restored = match &self.original {
            Some(bytes) => write_bytes(&self.path, bytes),
            None => std::fs::remove_file(&self.path),
        };
        restored.map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

fn ask_ably(
    settings: &Settings,
    targets: &[String],
    issued_before: u64,
    margin: bool,
) -> Result<Vec<Revoked>, AblyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AblyError::Malformed(format!("cannot start a runtime: {e}")))?;
    let rest = AblyRest::new(
        settings.ably.rest_url.clone(),
        settings.ably.timeout,
        HttpClient::new(capsign::native::server()),
    );
    runtime.block_on(rest.revoke_tokens(&settings.ably.key, targets, issued_before, margin))
}

fn explain(e: &AblyError, settings: &Settings) -> String {
    let nothing = "nothing was revoked and the list is unchanged";
    match e {
        AblyError::Refused { code, .. } if NOT_REVOCABLE.contains(code) => format!(
            "{e} ({code}): the key {} has no revocable tokens. Enable them on the key in Ably's \
             dashboard (tokens issued after that can be revoked; set CAPSIGN_REVOCABLE_TOKENS=true), \
             or run again with --list-only to stop capsign renewing the grants: {nothing}",
            settings.ably.key.name
        ),
        AblyError::Refused { code, .. } => format!("{e} ({code}): {nothing}"),
        AblyError::Unreachable(_) => format!(
            "{e} at {} (CAPSIGN_ABLY_REST_URL): {nothing}",
            settings.ably.rest_url
        ),
        AblyError::Malformed(_) => format!("{e}: {nothing}"),
    }
}

/// Adds `entries` to the list file (dropping the entries too old to matter), or prints them
/// for the app to publish at its list URL.
fn publish(
    file: Option<&ListFile>,
    entries: Vec<EntryDoc>,
    settings: &Settings,
    now_ms: u64,
) -> Result<(), String> {
    let Some(file) = file else {
        if entries.is_empty() {
            return Ok(());
        }
        println!("{}", ListDoc::of(entries).to_pretty_json());
        eprintln!(
            "capsign revoke: add these entries to the revocation list every instance reads{}",
            match &settings.revocation.list {
                Some(Location::Url(url)) => format!(
                    " ({}{})",
                    url.authority().map(|a| a.as_str()).unwrap_or_default(),
                    url.path()
                ),
                _ => " (CAPSIGN_REVOCATIONS is not set: no instance reads one yet)".to_owned(),
            }
        );
        return Ok(());
    };
    let added = entries.len();
    let doc = file.with(entries, settings, now_ms);
    let path = &file.path;
    write_list(path, &doc)?;
    eprintln!(
        "capsign revoke: {added} entries added to {} ({} in force); every instance reads it within \
         CAPSIGN_REVOCATIONS_REFRESH ({})",
        path.display(),
        doc.revocations.len(),
        humantime::format_duration(settings.revocation.refresh)
    );
    Ok(())
}

/// Writes the list whole and renames it into place: an instance never reads half a list.
fn write_list(path: &Path, doc: &ListDoc) -> Result<(), String> {
    write_bytes(path, doc.to_pretty_json().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn write_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("capsign-tmp");
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path))
}
