//! What the settings say to a person: `capsign --help` and the effective view of
//! `capsign check`.

use super::*;

/// One setting as `capsign check` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The variable.
    pub name: &'static str,
    /// Its value as given (`<redacted>` for a secret), or the built-in default as shown.
    pub value: String,
    /// Where it came from: `environment`, `FILE`, or `default`.
    pub source: String,
}

/// Every setting with its effective value and where it came from, secrets redacted, for
/// `capsign check`. Reads what [`Settings::load`] reads (it does not check the values).
///
/// # Errors
///
/// The `--config` file cannot be read, is not TOML, or names an unknown setting.
pub fn effective(
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<&Path>,
) -> Result<Vec<Effective>, SettingsError> {
    let path = file.map(|p| p.display().to_string());
    let src = Source {
        env,
        file: file.map(read_file).transpose()?,
    };
    // Checked as `load` checks them; only where each came from is shown.
    secret_files(env)?;
    Ok(TABLE
        .iter()
        .map(|d| {
            if let Some(path) = env(&format!("{}{FILE_SUFFIX}", d.name)).filter(|_| d.secret) {
                return Effective {
                    name: d.name,
                    value: "<redacted>".to_owned(),
                    source: format!("file {path} ({}{FILE_SUFFIX})", d.name),
                };
            }
            let (value, source) = match (src.get(d.name), (env)(d.name)) {
                (Some(_), Some(_)) if d.secret => {
                    ("<redacted>".to_owned(), "environment".to_owned())
                }
                (Some((v, _)), Some(_)) => (v, "environment".to_owned()),
                (Some(_), None) if d.secret => {
                    ("<redacted>".to_owned(), path.clone().unwrap_or_default())
                }
                (Some((v, _)), None) => (v, path.clone().unwrap_or_default()),
                (None, _) => (d.default.to_owned(), "default".to_owned()),
            };
            Effective {
                name: d.name,
                value,
                source,
            }
        })
        .collect())
}

/// The settings for `capsign --help`: every one with its default and doc, secrets marked.
pub fn help() -> String {
    let mut out = String::from(
        "Settings (environment variables; in a --config TOML file, the same names in lower \
         case without CAPSIGN_, e.g. cookie_key; the environment wins):\n",
    );
    for d in TABLE {
        out.push_str("\n  ");
        out.push_str(d.name);
        match (d.default, d.secret) {
            ("", true) => out.push_str("  (secret)"),
            ("", false) => {}
            (default, secret) => {
                out.push_str(&format!("  [default: {default}]"));
                if secret {
                    out.push_str(" (secret)");
                }
            }
        }
        out.push_str("\n      ");
        out.push_str(d.doc);
    }
    out.push_str(
        "\nAlso read from the environment:\n\n  PORT\n      A container platform's port \
         (Cloud Run, Fly.io, Knative): when CAPSIGN_LISTEN is unset, capsign listens on \
         0.0.0.0:PORT (127.0.0.1:PORT in demo mode).\n\n  RUST_LOG\n      Log filter \
         (tracing's EnvFilter syntax), e.g. info, capsign=debug, warn. Default: info.\n",
    );
    out
}
